//! A minimal reference load client, independent of loadtest: one thread, plain TCP sockets, a
//! hand-written WebSocket client (RFC 6455 handshake and framing, ~100 lines), no goose and no
//! wsedge code. `scripts/compare-reference.sh` runs it and loadtest against the same wsedge on
//! the same workloads, interleaved, to check that loadtest measures what a bare client does.
//!
//! Latency is counted as loadtest counts it: from the *intended* send time of an open-model
//! schedule (each sender's n-th message is due at start + n / rate), and also from the actual
//! send time. Samples count when their due time falls in the measured window (after the ramp).
//!
//! Usage: `refclient URL echo USERS RATE SECONDS` or
//! `refclient URL fanout PUBLISHERS RATE SUBSCRIBERS SECONDS`; optional env `REF_RAMP_S`
//! (default 1) and `REF_PAYLOAD` (bytes of padding, default 128). Prints one JSON line.

// The workspace bans async locks for the server's shards; here one connection's writer is shared
// by its sender and its reader (pongs) across awaits, on one thread.
#![allow(clippy::disallowed_types)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

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

    fn sample(&mut self, due: u64, sent: u64) {
        if (self.from..self.until).contains(&due) {
            let now = self.now_us();
            let _ = self.intended.record(now.saturating_sub(due).max(1));
            let _ = self.actual.record(now.saturating_sub(sent).max(1));
        }
    }
}

type Shared = Rc<RefCell<Record>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> Result<f64> {
        args.get(i)
            .context("usage: refclient URL echo USERS RATE SECONDS | URL fanout PUBLISHERS RATE SUBSCRIBERS SECONDS")?
            .parse()
            .context("a number")
    };
    let url = args.first().context("URL")?.clone();
    let workload = args.get(1).context("workload")?.clone();
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let record = Rc::new(RefCell::new(Record {
        start: Instant::now(),
        from: (ramp * 1e6) as u64,
        until: ((ramp + seconds) * 1e6) as u64,
        intended: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        actual: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    }));
    let cpu_before = cpu_us();
    local.block_on(&runtime, async {
        let mut tasks = Vec::new();
        for i in 0..subscribers as usize {
            let (r, mut w) = connect(&addr, &path).await?;
            w.send(br#"{"op":"subscribe","channel":"loadtest.fanout","ref":"s"}"#)
                .await?;
            let mut r = r;
            loop {
                let text = r.next_text(&mut w).await?.context("closed before ok")?;
                if text.starts_with(br#"{"op":"ok""#) {
                    break;
                }
            }
            tasks.push(tokio::task::spawn_local(read_loop(r, w, record.clone(), i)));
        }
        let end = Duration::from_secs_f64(ramp + seconds);
        for i in 0..senders as usize {
            let (r, w) = connect(&addr, &path).await?;
            let w = Rc::new(tokio::sync::Mutex::new(w));
            if workload == "echo" {
                let reader = EchoReader(w.clone());
                tasks.push(tokio::task::spawn_local(reader.run(r, record.clone())));
            }
            let (record, pad, workload) = (record.clone(), pad.clone(), workload.clone());
            tasks.push(tokio::task::spawn_local(async move {
                send_loop(w, record, i, rate, end, &workload, &pad).await
            }));
        }
        // Senders stop at the end; readers get a second to drain, then everything stops.
        tokio::time::sleep(end + Duration::from_secs(1)).await;
        for t in tasks {
            t.abort();
        }
        anyhow::Ok(())
    })?;
    let cpu = cpu_us() - cpu_before;
    let r = record.borrow();
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

/// Sends one message per 1/rate s on an open-model schedule, with its due and actual send time.
async fn send_loop(
    w: Rc<tokio::sync::Mutex<Writer>>,
    record: Shared,
    i: usize,
    rate: f64,
    end: Duration,
    workload: &str,
    pad: &str,
) -> Result<()> {
    let interval = 1e6 / rate;
    // Spread the senders over one interval, as loadtest does.
    let offset = (i as f64 * 7919.0) % interval;
    let start = record.borrow().start;
    for n in 0u64.. {
        let due = (offset + n as f64 * interval) as u64;
        if due >= end.as_micros() as u64 {
            break;
        }
        tokio::time::sleep_until((start + Duration::from_micros(due)).into()).await;
        let a = record.borrow().now_us();
        let text = match workload {
            "echo" => format!(r#"{{"op":"echo","data":{{"t":{due},"a":{a},"pad":"{pad}"}}}}"#),
            _ => format!(
                r#"{{"op":"publish","channel":"loadtest.fanout","data":{{"p":{i},"s":{n},"t":{due},"a":{a},"pad":"{pad}"}}}}"#
            ),
        };
        w.lock().await.send(text.as_bytes()).await?;
    }
    Ok(())
}

/// Reads an echo user's replies (its writer is shared with its sender, for pongs).
struct EchoReader(Rc<tokio::sync::Mutex<Writer>>);

impl EchoReader {
    async fn run(self, mut r: Reader, record: Shared) -> Result<()> {
        loop {
            let frame = r.next_frame().await?;
            match frame {
                Some((0x9, payload)) => self.0.lock().await.frame(0xA, &payload).await?,
                Some((0x1, text)) => observe(&text, &record),
                Some(_) => {}
                None => return Ok(()),
            }
        }
    }
}

async fn read_loop(mut r: Reader, mut w: Writer, record: Shared, _i: usize) -> Result<()> {
    while let Some(text) = r.next_text(&mut w).await? {
        observe(&text, &record);
    }
    Ok(())
}

/// Records a message or echo reply carrying `"t":<due>` and `"a":<sent>`.
fn observe(text: &[u8], record: &Shared) {
    let field = |key: &[u8]| -> Option<u64> {
        let at = text.windows(key.len()).position(|w| w == key)? + key.len();
        let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&text[at..at + digits])
            .ok()?
            .parse()
            .ok()
    };
    if let (Some(t), Some(a)) = (field(br#""t":"#), field(br#""a":"#)) {
        record.borrow_mut().sample(t, a);
    }
}

fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("ws://").context("a ws:// URL")?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((addr.to_string(), format!("/{path}")))
}

/// The read half: a buffer of received bytes.
struct Reader {
    stream: OwnedReadHalf,
    buf: Vec<u8>,
    at: usize,
}

/// The write half, masking each frame as a client must.
struct Writer {
    stream: OwnedWriteHalf,
    mask: u32,
}

async fn connect(addr: &str, path: &str) -> Result<(Reader, Writer)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
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
    let (read, write) = stream.into_split();
    let mut reader = Reader {
        stream: read,
        buf: buf.split_off(head_end),
        at: 0,
    };
    let mut writer = Writer {
        stream: write,
        mask: 0x9e37_79b9,
    };
    // wsedge greets first (`welcome`); a plain server says nothing.
    if path != "/echo" && path != "/broadcast" {
        reader.next_text(&mut writer).await?.context("no welcome")?;
    }
    Ok((reader, writer))
}

impl Writer {
    async fn send(&mut self, text: &[u8]) -> Result<()> {
        self.frame(0x1, text).await
    }

    async fn frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
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
        self.stream.write_all(&out).await?;
        Ok(())
    }
}

impl Reader {
    /// The next text message, answering pings on the way; `None` once closed.
    async fn next_text(&mut self, w: &mut Writer) -> Result<Option<Vec<u8>>> {
        loop {
            match self.next_frame().await? {
                Some((0x1, text)) => return Ok(Some(text)),
                Some((0x9, payload)) => w.frame(0xA, &payload).await?,
                Some((0x8, _)) | None => return Ok(None),
                Some(_) => {}
            }
        }
    }

    /// The next frame as (opcode, payload) (server frames are unmasked and, from wsedge and
    /// the peer, never fragmented); `None` at the end of the stream.
    async fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        loop {
            if let Some((opcode, start, len)) = self.parse_head() {
                if self.buf.len() - self.at >= start + len {
                    let begin = self.at + start;
                    let payload = self.buf[begin..begin + len].to_vec();
                    self.at = begin + len;
                    if self.at == self.buf.len() {
                        self.buf.clear();
                        self.at = 0;
                    }
                    return Ok(Some((opcode, payload)));
                }
            }
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            // Straight into the buffer's spare room (no zeroed scratch array per read).
            self.buf.reserve(65536);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// (opcode, header length, payload length) of the frame at `at`, once its header is in.
    fn parse_head(&self) -> Option<(u8, usize, usize)> {
        let b = &self.buf[self.at..];
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        match b[1] & 0x7f {
            126 if b.len() >= 4 => Some((opcode, 4, u16::from_be_bytes([b[2], b[3]]) as usize)),
            127 if b.len() >= 10 => {
                let len = u64::from_be_bytes(b[2..10].try_into().ok()?);
                Some((opcode, 10, len as usize))
            }
            126 | 127 => None,
            n => Some((opcode, 2, n as usize)),
        }
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
