//! A connection's task: reads and decodes frames and hands requests to
//! [`crate::shard::dispatch`], writes its [`Conn`]'s outbox in vectored writes, sends pings,
//! enforces the idle and close deadlines, then lingers and removes the connection from its shard.

use std::io::{self, IoSlice};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep_until, Instant};
use wsedge_core::limits::{ConnLimits, Verdict};
use wsedge_core::protocol::decoder::{Decoder, Event};
use wsedge_core::protocol::frame::{self, OpCode};
use wsedge_core::protocol::Priority;

use super::transport::Stream;
use super::{CloseKind, CloseReason, Conn, Endpoint, Hold, Phase};
use crate::shard::{dispatch, Shard};

/// Most slices in one vectored write.
const MAX_IOV: usize = 256;
/// Fairness: a read that holds more frames than this is followed by a yield to the shard's other
/// tasks, and the connection's next read takes at most [`FLOOD_READ_BYTES`], until a read holds
/// fewer; a read that fills the whole buffer yields too. A client flooding tiny frames so gets a
/// slice of the shard, not all of it.
const FRAMES_PER_TURN: u64 = 256;
/// The most a flooding connection reads per turn (see [`FRAMES_PER_TURN`]).
const FLOOD_READ_BYTES: usize = 4 << 10;
/// Longest wait for the peer to close after our final close frame and FIN.
const MAX_LINGER: Duration = Duration::from_secs(2);
/// Most input discarded while lingering: a peer still flooding is not waited for.
const MAX_LINGER_BYTES: usize = 256 << 10;

/// What one read found.
enum Read {
    /// Bytes, handled; `full` when they filled the read (more are likely waiting).
    Some {
        full: bool,
    },
    /// Nothing yet.
    None,
    Eof,
}

/// How the connection task ended.
#[derive(Debug)]
enum End {
    /// The close handshake is done on our side: half-close and linger.
    Closed,
    /// The peer went away (EOF) or a close deadline passed.
    Abandoned(&'static str),
    Io(io::Error),
}

/// The connection task's own state.
struct Session<'a> {
    shard: &'a Shard,
    conn: &'a Rc<Conn>,
    endpoint: Endpoint,
    decoder: Decoder,
    limits: ConnLimits,
    /// The most the next read may take (see [`FRAMES_PER_TURN`]).
    read_limit: usize,
    reading: bool,
    peer_closed: bool,
    last_heard: Instant,
    /// When a write last went out (coalescing holds deliveries until this + `write_coalesce`).
    last_write: Instant,
    next_ping: Instant,
    close_deadline: Option<Instant>,
}

/// Runs an upgraded connection until it ends, then removes it from the shard.
pub async fn run(
    shard: Rc<Shard>,
    conn: Rc<Conn>,
    stream: Stream,
    prefix: Bytes,
    endpoint: Endpoint,
) {
    let config = shard.config();
    let now = Instant::now();
    let mut session = Session {
        shard: &shard,
        conn: &conn,
        endpoint,
        decoder: Decoder::new(config.max_message_size, config.max_fragments),
        limits: ConnLimits::new(&config.rate_limits, now.into_std()),
        read_limit: usize::MAX,
        reading: true,
        peer_closed: false,
        last_heard: now,
        last_write: now.checked_sub(config.write_coalesce).unwrap_or(now),
        next_ping: now + config.ping_interval,
        close_deadline: None,
    };
    let end = session.run(&stream, prefix).await;
    match &end {
        End::Io(e) => tracing::debug!(conn = %conn.id, "connection error: {e}"),
        End::Abandoned(why) => tracing::debug!(conn = %conn.id, "connection abandoned: {why}"),
        End::Closed => {}
    }
    let (code, why) = conn.closed_as().unwrap_or((1006, CloseReason::Abnormal));
    shard.metrics().closed(code, why);
    tracing::debug!(conn = %conn.id, code, reason = why.as_str(), "disconnected");
    shard.disconnect(conn.id);
    if matches!(end, End::Closed) {
        linger(&shard, stream, config.close_timeout.min(MAX_LINGER)).await;
    }
    shard.remove(conn.id);
}

/// Half-closes and discards input until the peer closes too (or `limit`, or
/// [`MAX_LINGER_BYTES`]), so that unread input does not make the kernel reset the connection
/// before the peer has read our close frame. Yields after each read, like a live connection.
async fn linger(shard: &Shard, stream: Stream, limit: Duration) {
    stream.close_notify();
    let stream = stream.tcp();
    if socket2::SockRef::from(stream)
        .shutdown(std::net::Shutdown::Write)
        .is_err()
    {
        return;
    }
    let drain = async {
        let mut discarded = 0;
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            let read = stream.try_read(&mut shard.read_buffer());
            match read {
                Ok(0) => return,
                Ok(n) => {
                    discarded += n;
                    if discarded > MAX_LINGER_BYTES {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

impl Session<'_> {
    async fn run(&mut self, stream: &Stream, prefix: Bytes) -> End {
        // `prefix` is a slice of hyper's whole read buffer: handle it and let it go at once.
        if !prefix.is_empty() {
            self.on_bytes(&prefix);
        }
        drop(prefix);
        // A TLS session may hold plaintext already, which no readiness event would announce.
        match self.read(stream) {
            Ok(Read::Eof) => return End::Abandoned("peer closed the TCP connection"),
            Err(e) => return End::Io(e),
            Ok(_) => {}
        }
        let timer = sleep_until(self.next_deadline());
        tokio::pin!(timer);
        loop {
            if self.conn.expiry_changed.replace(false) {
                timer.as_mut().reset(self.next_deadline());
            }
            if !self.conn.is_open() && self.close_deadline.is_none() {
                let within = self
                    .conn
                    .close_within
                    .get()
                    .unwrap_or(self.shard.config().close_timeout);
                self.close_deadline = Some(Instant::now() + within);
                timer.as_mut().reset(self.next_deadline());
            }
            let queued = !self.conn.outbox.borrow().is_empty();
            let buffered = stream.has_buffered();
            let want_write = buffered || (queued && !self.hold_back());
            if !queued && !buffered {
                if let Phase::Closing { await_peer } = self.conn.phase.get() {
                    if !await_peer || self.peer_closed || !self.reading {
                        return End::Closed;
                    }
                }
            }
            tokio::select! {
                biased;
                ready = stream.tcp().writable(), if want_write => {
                    if let Err(e) = ready.and_then(|()| self.flush(stream)) {
                        return End::Io(e);
                    }
                }
                ready = stream.tcp().readable(), if self.reading => {
                    let frames = self.decoder.frames();
                    match ready.and_then(|()| self.read(stream)) {
                        Ok(Read::Eof) => return End::Abandoned("peer closed the TCP connection"),
                        Ok(Read::Some { full }) => {
                            let flood = self.decoder.frames() - frames > FRAMES_PER_TURN;
                            self.read_limit = if flood { FLOOD_READ_BYTES } else { usize::MAX };
                            if flood || full {
                                tokio::task::yield_now().await;
                            }
                        }
                        Ok(Read::None) => {}
                        Err(e) => return End::Io(e),
                    }
                }
                () = self.conn.wake.notified(), if !want_write => {}
                () = &mut timer => {
                    if let Some(end) = self.on_timer() {
                        return end;
                    }
                    timer.as_mut().reset(self.next_deadline());
                }
            }
        }
    }

    /// Whether queued deliveries wait for company: only when nothing urgent is queued and this
    /// connection wrote less than `write_coalesce` ago; then the shard's coalescer releases it.
    fn hold_back(&self) -> bool {
        let conn = self.conn;
        let coalesce = self.shard.config().write_coalesce;
        match conn.hold.get() {
            _ if conn.urgent.get() || coalesce.is_zero() => false,
            Hold::Held => true,
            Hold::Released => false,
            Hold::Free if Instant::now() < self.last_write + coalesce => {
                conn.hold.set(Hold::Held);
                self.shard.coalescer().hold(conn);
                true
            }
            Hold::Free => false,
        }
    }

    fn next_deadline(&self) -> Instant {
        self.close_deadline.unwrap_or_else(|| {
            let next = (self.last_heard + self.shard.config().idle_timeout).min(self.next_ping);
            match self.conn.expires.get() {
                Some(expires) => next.min(Instant::from_std(expires)),
                None => next,
            }
        })
    }

    fn on_timer(&mut self) -> Option<End> {
        let now = Instant::now();
        let config = self.shard.config();
        if let Some(deadline) = self.close_deadline {
            return (now >= deadline).then_some(End::Abandoned("close timed out"));
        }
        if self
            .conn
            .expires
            .get()
            .is_some_and(|at| now >= Instant::from_std(at))
        {
            self.conn.close(
                Some((4001, "token expired")),
                CloseReason::TokenExpired,
                CloseKind::Graceful,
                None,
            );
        } else if now >= self.last_heard + config.idle_timeout {
            self.conn.close(
                Some((1001, "idle timeout")),
                CloseReason::IdleTimeout,
                CloseKind::Graceful,
                None,
            );
        } else if now >= self.next_ping {
            self.conn
                .send(Priority::Critical, frame::encode(OpCode::Ping, b""));
            self.next_ping = now + config.ping_interval;
        }
        None
    }

    /// Writes batches until the outbox is empty or the socket is full.
    fn flush(&mut self, stream: &Stream) -> io::Result<()> {
        let batch = self.shard.config().write_batch_bytes;
        loop {
            let (written, offered) = {
                let outbox = self.conn.outbox.borrow();
                if outbox.is_empty() {
                    return match stream.flush_buffered() {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                        result => result,
                    };
                }
                let mut slices = [IoSlice::new(&[]); MAX_IOV];
                let (count, offered) = outbox.gather(batch, &mut slices);
                let written = match stream.try_write_vectored(&slices[..count]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                (written, offered)
            };
            let metrics = self.shard.metrics();
            metrics.write_calls.inc();
            if written > 0 {
                metrics.bytes_out.add(written as u64);
                let now = Instant::now();
                let born = self.conn.take_oldest_born();
                if born != 0 && self.shard.sample_latency(now.into_std()) {
                    metrics.delivered_at(born, crate::metrics::us_at(now.into_std()));
                }
                self.last_write = now;
                if self.conn.hold.get() == Hold::Released {
                    self.conn.hold.set(Hold::Free);
                }
            }
            let mut outbox = self.conn.outbox.borrow_mut();
            outbox.consume(written);
            self.conn.report_load(outbox.queued_bytes());
            if outbox.is_empty() {
                self.conn.urgent.set(false);
            }
            drop(outbox);
            if written < offered {
                return Ok(());
            }
        }
    }

    /// Reads what the socket has (at most `read_limit` bytes) into the shard's buffer and handles
    /// it.
    fn read(&mut self, stream: &Stream) -> io::Result<Read> {
        let mut buffer = self.shard.read_buffer();
        let limit = self.read_limit.min(buffer.len());
        match stream.try_read(&mut buffer[..limit]) {
            Ok(0) => Ok(Read::Eof),
            Ok(n) => {
                self.shard.metrics().bytes_in.add(n as u64);
                self.last_heard = Instant::now();
                self.on_bytes(&buffer[..n]);
                Ok(Read::Some { full: n == limit })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::None),
            Err(e) => Err(e),
        }
    }

    /// Checks a data message against `limits.messages_per_s`: over it, refused (on `/ws` with
    /// `rate_limited`), or the connection closed after `violations_before_close` refusals.
    fn allow_message(&mut self, now: std::time::Instant) -> bool {
        if self.endpoint == Endpoint::Echo {
            let raw = crate::metrics::op_index("raw_echo");
            self.shard.metrics().received[raw].inc();
        }
        match self.limits.message(now) {
            Verdict::Allow => true,
            Verdict::Refuse => {
                if self.endpoint == Endpoint::Protocol {
                    crate::shard::refuse::refuse_rate_limited(
                        self.shard,
                        self.conn,
                        None,
                        "messages_per_s",
                    );
                }
                false
            }
            Verdict::Close => {
                self.reading = false;
                crate::shard::refuse::close_rate_limited(self.conn);
                false
            }
        }
    }

    /// Stops reading and closes with `code` after what is queued.
    fn fail(&mut self, code: u16, reason: &str) {
        tracing::debug!(conn = %self.conn.id, "closing with {code}: {reason}");
        self.reading = false;
        self.conn.close(
            Some((code, reason)),
            CloseReason::Protocol,
            CloseKind::Final,
            None,
        );
    }

    fn on_bytes(&mut self, mut input: &[u8]) {
        while self.reading && !input.is_empty() {
            match self.decoder.decode(&mut input) {
                Ok(Some(event)) => self.on_event(event),
                Ok(None) => {}
                Err(e) => self.fail(e.close_code(), &e.to_string()),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        crate::shard::coalesce::count_frame();
        let conn = self.conn;
        let now = self.last_heard.into_std();
        match event {
            Event::Close(code) => {
                self.peer_closed = true;
                self.reading = false;
                conn.close(
                    code.map(|c| (c, "")),
                    CloseReason::Peer,
                    CloseKind::Final,
                    None,
                );
            }
            Event::Ping(_) | Event::Pong if !self.limits.control_frame(now) => {
                self.fail(1008, "too many pings");
            }
            Event::Ping(payload) => {
                conn.send(Priority::Critical, frame::encode(OpCode::Pong, &payload))
            }
            Event::Pong => {}
            _ if !conn.is_open() => {}
            _ if !self.allow_message(now) => {}
            Event::Text(message) => match self.endpoint {
                Endpoint::Echo => conn.send(
                    Priority::Normal,
                    frame::finish(message.into_frame_buffer(), OpCode::Text),
                ),
                Endpoint::Protocol => {
                    dispatch::handle_text(self.shard, conn, message, &mut self.limits, now)
                }
            },
            Event::Binary(message) => match self.endpoint {
                Endpoint::Echo => conn.send(
                    Priority::Normal,
                    frame::finish(message.into_frame_buffer(), OpCode::Binary),
                ),
                Endpoint::Protocol => crate::shard::refuse::reject_binary(self.shard, conn),
            },
        }
    }
}
