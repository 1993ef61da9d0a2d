//! A minimal reference load client, independent of loadtest: one thread, plain TCP sockets on a
//! raw level-triggered epoll loop, a hand-written WebSocket client (RFC 6455 handshake and
//! framing, ~100 lines), no async runtime, no goose and no wsedge code.
//! `scripts/compare-reference.sh` runs it and loadtest against the same wsedge on the same
//! workloads, interleaved, to check that loadtest measures what a bare client does.
//!
//! Latency is counted as loadtest counts it: from the *intended* send time of an open-model
//! schedule (each sender's n-th message is due at start + n / rate), and also from the actual
//! send time. Samples count when their due time falls in the measured window (after the ramp).
//! It sleeps until each due send with a nanosecond timeout (`epoll_pwait2`, timer slack 1 ns),
//! so the intended-time figures hold only microseconds of the client's own timer lag.
//!
//! Usage: `refclient URL echo USERS RATE SECONDS` or
//! `refclient URL fanout PUBLISHERS RATE SUBSCRIBERS SECONDS`; optional env `REF_RAMP_S`
//! (default 1) and `REF_PAYLOAD` (bytes of padding, default 128). Prints one JSON line.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

/// Each connection's receive buffer, in bytes.
const BUF: usize = 16 * 1024;

const USAGE: &str =
    "usage: refclient URL echo USERS RATE SECONDS | URL fanout PUBLISHERS RATE SUBSCRIBERS SECONDS";

/// What every connection records into.
struct Record {
    start: Instant,
    from: u64,
    until: u64,
    intended: Histogram<u64>,
    actual: Histogram<u64>,
}

impl Record {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records a message or echo reply carrying `"t":<due>` and `"a":<sent>`, received at `now`.
    fn observe(&mut self, text: &[u8], now: u64) {
        let field = |key: &[u8]| -> Option<u64> {
            let at = text.windows(key.len()).position(|w| w == key)? + key.len();
            let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&text[at..at + digits])
                .ok()?
                .parse()
                .ok()
        };
        if let (Some(due), Some(sent)) = (field(br#""t":"#), field(br#""a":"#)) {
            if (self.from..self.until).contains(&due) {
                let _ = self.intended.record(now.saturating_sub(due).max(1));
                let _ = self.actual.record(now.saturating_sub(sent).max(1));
            }
        }
    }
}

/// A sender's open-model schedule: its n-th message is due at `offset + n * interval` µs.
struct Schedule {
    conn: usize,
    offset: f64,
    interval: f64,
    n: u64,
}

impl Schedule {
    fn due(&self) -> u64 {
        (self.offset + self.n as f64 * self.interval) as u64
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> Result<f64> { args.get(i).context(USAGE)?.parse().context("a number") };
    let url = args.first().context(USAGE)?.clone();
    let workload = args.get(1).context(USAGE)?.clone();
    let (senders, rate, subscribers, seconds) = match workload.as_str() {
        "echo" => (num(2)?, num(3)?, 0.0, num(4)?),
        "fanout" => (num(2)?, num(3)?, num(4)?, num(5)?),
        other => bail!("unknown workload {other:?}"),
    };
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (ramp, pad) = (
        env("REF_RAMP_S", 1.0),
        "x".repeat(env("REF_PAYLOAD", 128.0) as usize),
    );
    let (addr, path) = split_url(&url)?;
    let mut record = Record {
        start: Instant::now(),
        from: (ramp * 1e6) as u64,
        until: ((ramp + seconds) * 1e6) as u64,
        intended: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        actual: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    let cpu_before = cpu_us();

    // Set-up, blocking: subscribers first (each confirmed), then the senders.
    let mut conns = Vec::new();
    for _ in 0..subscribers as usize {
        let mut c = Conn::connect(&addr, &path)?;
        c.send(br#"{"op":"subscribe","channel":"loadtest.fanout","ref":"s"}"#)?;
        while !c
            .next_text()?
            .context("closed before ok")?
            .starts_with(br#"{"op":"ok""#)
        {}
        conns.push(c);
    }
    let interval = 1e6 / rate;
    let mut schedules = Vec::new();
    for i in 0..senders as usize {
        // Spread the senders over one interval, as loadtest does.
        let offset = (i as f64 * 7919.0) % interval;
        schedules.push(Schedule {
            conn: conns.len(),
            offset,
            interval,
            n: 0,
        });
        conns.push(Conn::connect(&addr, &path)?);
    }

    // The loop: one epoll (level-triggered, one read per ready socket per wake-up); the
    // timeout is the next due send.
    // SAFETY: PR_SET_TIMERSLACK takes an integer; the call only affects this thread's timers.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let epoll = Epoll::new()?;
    for (i, c) in conns.iter().enumerate() {
        c.stream.set_nonblocking(true)?;
        epoll.add(c.stream.as_raw_fd(), i as u64)?;
    }
    let end = ((ramp + seconds) * 1e6) as u64;
    let stop = end + 1_000_000; // a second for the last replies to drain
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut text = Vec::new();
    loop {
        let now = record.now_us();
        if now >= stop {
            break;
        }
        let next = schedules
            .iter()
            .map(Schedule::due)
            .filter(|&d| d < end)
            .min()
            .unwrap_or(stop);
        let timeout = Duration::from_micros(next.saturating_sub(now).min(1_000_000));
        let ready = epoll.wait(&mut events, timeout)?;
        for event in &events[..ready] {
            let c = &mut conns[event.u64 as usize];
            if !c.fill()? {
                bail!("the server closed a connection");
            }
            let now = record.now_us();
            while let Some(opcode) = c.take_frame(&mut text) {
                match opcode {
                    0x1 => record.observe(&text, now),
                    0x9 => c.frame(0xA, &text)?,
                    0x8 => bail!("the server closed a connection"),
                    _ => {}
                }
            }
        }
        let now = record.now_us();
        for s in schedules.iter_mut() {
            while s.due() < end && s.due() <= now {
                let (due, n, a) = (s.due(), s.n, record.now_us());
                let msg = match workload.as_str() {
                    "echo" => {
                        format!(r#"{{"op":"echo","data":{{"t":{due},"a":{a},"pad":"{pad}"}}}}"#)
                    }
                    _ => format!(
                        r#"{{"op":"publish","channel":"loadtest.fanout","data":{{"p":{},"s":{n},"t":{due},"a":{a},"pad":"{pad}"}}}}"#,
                        s.conn
                    ),
                };
                conns[s.conn].send(msg.as_bytes())?;
                s.n += 1;
            }
        }
    }

    let cpu = cpu_us() - cpu_before;
    let r = &record;
    let n = r.intended.len();
    println!(
        "{{\"workload\":\"{workload}\",\"samples\":{n},\"per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\
         \"p50_from_send_us\":{},\"p99_from_send_us\":{},\"cpu_us\":{cpu},\"cpu_us_per_message\":{:.3}}}",
        n as f64 / seconds,
        r.intended.value_at_quantile(0.5),
        r.intended.value_at_quantile(0.99),
        r.actual.value_at_quantile(0.5),
        r.actual.value_at_quantile(0.99),
        cpu as f64 / n.max(1) as f64
    );
    Ok(())
}

fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("ws://").context("a ws:// URL")?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((addr.to_string(), format!("/{path}")))
}

/// A level-triggered epoll instance.
struct Epoll(libc::c_int);

impl Epoll {
    fn new() -> Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a negative result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            bail!("epoll_create1: {}", std::io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    fn add(&self, fd: libc::c_int, token: u64) -> Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for ready sockets; returns how many of `events` were filled.
    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> Result<usize> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `events` is valid for `events.len()` entries, which is what the call may
        // write; `timeout` is read during the call; a null sigmask means none.
        let n = unsafe {
            libc::epoll_pwait2(
                self.0,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &timeout,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                return Ok(0);
            }
            bail!("epoll_wait: {err}");
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// One WebSocket client connection: a socket, the bytes received and not yet framed
/// (`buf[at..end]`), and the mask of the next frame sent.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    at: usize,
    end: usize,
    mask: u32,
}

impl Conn {
    /// Connects and upgrades (blocking); wsedge's `welcome` is read and dropped.
    fn connect(addr: &str, path: &str) -> Result<Self> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes())?;
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("closed during the handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            bail!(
                "upgrade refused: {}",
                String::from_utf8_lossy(&buf[..head_end.min(80)])
            );
        }
        let mut rest = buf.split_off(head_end);
        let end = rest.len();
        rest.resize(BUF.max(end), 0);
        let mut conn = Self {
            stream,
            buf: rest,
            at: 0,
            end,
            mask: 0x9e37_79b9,
        };
        // wsedge greets first (`welcome`); a plain server says nothing.
        if path != "/echo" && path != "/broadcast" {
            conn.next_text()?.context("no welcome")?;
        }
        Ok(conn)
    }

    /// Blocking, during set-up only: the next text message, answering pings on the way.
    fn next_text(&mut self) -> Result<Option<Vec<u8>>> {
        let mut payload = Vec::new();
        loop {
            match self.take_frame(&mut payload) {
                Some(0x1) => return Ok(Some(payload)),
                Some(0x9) => self.frame(0xA, &payload)?,
                Some(0x8) => return Ok(None),
                Some(_) => {}
                None if !self.fill()? => return Ok(None),
                None => {}
            }
        }
    }

    /// One read into the buffer's spare room (allocated and zeroed once, grown only for a
    /// frame larger than it); false at the end of the stream.
    fn fill(&mut self) -> Result<bool> {
        if self.at > 0 {
            self.buf.copy_within(self.at..self.end, 0);
            self.end -= self.at;
            self.at = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes the next whole frame out of the buffer: its opcode, and its payload into `out`.
    /// Server frames are unmasked and, from wsedge and the peer, never fragmented.
    fn take_frame(&mut self, out: &mut Vec<u8>) -> Option<u8> {
        let b = &self.buf[self.at..self.end];
        if b.len() < 2 {
            return None;
        }
        let (start, len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
            127 if b.len() >= 10 => (10, u64::from_be_bytes(b[2..10].try_into().ok()?) as usize),
            126 | 127 => return None,
            n => (2, n as usize),
        };
        if b.len() < start + len {
            return None;
        }
        out.clear();
        out.extend_from_slice(&b[start..start + len]);
        let opcode = b[0] & 0x0f;
        self.at += start + len;
        Some(opcode)
    }

    fn send(&mut self, text: &[u8]) -> Result<()> {
        self.frame(0x1, text)
    }

    /// Writes one masked frame, as a client must; waits out a full socket buffer.
    fn frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // xorshift: a fresh mask per frame.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        let key = self.mask.to_be_bytes();
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        let mut rest = &out[..];
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    std::thread::sleep(Duration::from_micros(50))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// This process's CPU time (user + system) in µs, from /proc/self/stat.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks * 1_000_000 / 100
}
