//! POSTs alert transitions as JSON to `[alerting] webhook_url` (plain `http://`), from a thread
//! of its own: a slow or dead receiver never delays evaluation. At most [`QUEUE`] posts wait;
//! past that they are dropped and counted in the log. Each post has [`TIMEOUT`] to connect,
//! write and read the status line, and is not retried.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::Duration;

/// Posts waiting at most.
pub const QUEUE: usize = 64;
/// Time each post has for each of connect, write and read.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A webhook address: `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    /// Parses `url`, or says why not.
    pub fn parse(url: &str) -> Result<Target, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "{url:?} is not an http:// URL (https is not supported: post to a local relay)"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| format!("{url:?} has a bad port {port:?}"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("{url:?} has no host or a bad path"));
        }
        Ok(Target {
            host: host.into(),
            port,
            path: path.into(),
        })
    }
}

/// The sending thread's queue.
#[derive(Debug)]
pub struct Webhook {
    tx: SyncSender<String>,
}

impl Webhook {
    /// Starts the thread posting to `target`.
    pub fn start(target: Target) -> std::io::Result<Webhook> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("wsedge-webhook".into())
            .spawn(move || {
                for body in rx {
                    if let Err(e) = post(&target, &body) {
                        tracing::warn!(
                            "alert webhook http://{}:{}{}: {e}",
                            target.host,
                            target.port,
                            target.path
                        );
                    }
                }
            })?;
        Ok(Webhook { tx })
    }

    /// Queues `body` (JSON) to post; dropped (and logged) when [`QUEUE`] are waiting.
    pub fn send(&self, body: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(body) {
            tracing::warn!("alert webhook: {QUEUE} posts waiting; dropped one");
        }
    }
}

fn post(target: &Target, body: &str) -> std::io::Result<()> {
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the host has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: wsedge\r\n\r\n",
        target.path,
        target.host,
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut status = [0u8; 12];
    stream.read_exact(&mut status)?;
    match &status[9..10] {
        b"2" => Ok(()),
        _ => Err(std::io::Error::other(format!(
            "answered {}",
            String::from_utf8_lossy(&status[9..12])
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_parsed_or_refused() {
        let t = Target::parse("http://127.0.0.1:9000/hooks/a").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9000, "/hooks/a")
        );
        assert_eq!(Target::parse("http://alerts").unwrap().port, 80);
        assert!(Target::parse("https://x").unwrap_err().contains("https"));
        assert!(Target::parse("http://x:port/").is_err());
        assert!(Target::parse("http:///p").is_err());
    }
}
