//! Listening sockets: one per shard on the same address with SO_REUSEPORT (the kernel spreads
//! new connections across shards), and the accept loop. The loop answers 503 at once to a
//! connection past the socket or handshake budget (so the open-file limit is not reached in the
//! first place), and backs off when out of descriptors all the same, logging that at most once
//! per [`EXHAUSTION_LOG_INTERVAL`] with a count.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::metrics::{limit_index, rejection_index};
use crate::shard::{Pending, Shard};

/// Pause after an accept error caused by resource exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Accept errors and refused connections are logged at most once per this interval.
const EXHAUSTION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Binds `count` listeners on `addr`. With port 0 the first picks the port, the rest share it.
/// Fails with `AddrInUse` when another process already listens there (see [`ensure_free`]).
pub fn bind(
    addr: SocketAddr,
    backlog: u32,
    count: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    ensure_free(addr)?;
    let first = bind_one(addr, backlog)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(addr, backlog)?);
    }
    Ok(all)
}

/// SO_REUSEPORT would let a second server run by the same user join the first one's listeners, and
/// the kernel would then split clients between two unrelated servers. A socket bound without it
/// (SO_REUSEADDR only, so that connections in TIME_WAIT do not count) cannot share the port with a
/// listener: that bind fails with `AddrInUse` exactly when someone already listens on `addr`.
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Accepts connections forever, serving each on this shard.
pub async fn accept_loop(listener: tokio::net::TcpListener, shard: Rc<Shard>) {
    let mut refused = RateLog::new("connections answered 503 (socket or handshake budget full)");
    let mut limited = RateLog::new("connections answered 429 (per-address limit)");
    let mut exhausted = RateLog::new("accept failed for lack of resources");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let now_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let ip = match shard.shared().per_ip.admit(peer.ip(), now_s) {
                    Ok(ip) => ip,
                    Err(refusal) => {
                        let metrics = shard.metrics();
                        metrics.rejections[rejection_index(429)].inc();
                        if refusal == crate::per_ip::Refusal::TooFast {
                            metrics.rate_limited[limit_index("new_connections_per_ip")].inc();
                        }
                        let _ = stream.try_write(crate::http::per_ip_response(refusal));
                        limited.count(shard.index(), None);
                        continue;
                    }
                };
                match Pending::acquire(shard.shared()) {
                    Some(pending) => {
                        let _ = stream.set_nodelay(true);
                        let serve = crate::http::serve(stream, shard.clone(), pending, ip);
                        tokio::task::spawn_local(serve);
                    }
                    None => {
                        shard.metrics().rejections[rejection_index(503)].inc();
                        let _ = stream.try_write(crate::http::AT_CAPACITY_RESPONSE);
                        refused.count(shard.index(), None);
                    }
                }
            }
            Err(e) if is_exhaustion(&e) => {
                exhausted.count(shard.index(), Some(&e));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) => tracing::debug!(shard = shard.index(), "accept: {e}"),
        }
    }
}

/// A warning that repeats at most once per [`EXHAUSTION_LOG_INTERVAL`], with how many times it
/// happened since it was last logged.
struct RateLog {
    what: &'static str,
    count: u64,
    last: Option<Instant>,
}

impl RateLog {
    fn new(what: &'static str) -> Self {
        RateLog {
            what,
            count: 0,
            last: None,
        }
    }

    fn count(&mut self, shard: usize, error: Option<&io::Error>) {
        self.count += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now < last + EXHAUSTION_LOG_INTERVAL)
        {
            return;
        }
        let error = error.map(|e| format!(": {e}")).unwrap_or_default();
        tracing::warn!(shard, count = self.count, "{}{error}", self.what);
        self.count = 0;
        self.last = Some(now);
    }
}

fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
