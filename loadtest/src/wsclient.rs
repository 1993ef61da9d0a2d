//! A WebSocket client connection over fastwebsockets: a raw HTTP/1.1 upgrade from a chosen
//! 127.0.0.x source address, then split into a read half (its own task) and a shared write half.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketRead, WebSocketWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;

/// Where to connect: `ws://HOST:PORT/PATH`.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("ws://")
            .with_context(|| format!("{url:?}: only ws:// targets are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // `localhost` is loopback by definition (RFC 6761); other names are not resolved.
        let authority = match authority.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => authority.to_string(),
        };
        let addr: SocketAddr = authority.parse().with_context(|| {
            format!(
                "{url:?}: the host must be localhost:PORT or an IP:PORT (load is only sent to loopback)"
            )
        })?;
        if !addr.ip().is_loopback() {
            bail!("{url:?}: load tests target 127.0.0.0/8 or [::1] only");
        }
        Ok(Target {
            addr,
            path: path.to_string(),
        })
    }
}

pub type Reader = WebSocketRead<OwnedReadHalf>;
pub type Writer = Arc<Mutex<WebSocketWrite<OwnedWriteHalf>>>;

/// Source address for user `index`: spread over 127.0.0.1-127.0.0.16 so that many connections
/// do not exhaust one address's ephemeral ports.
fn source_ip(target: &Target, index: usize) -> Option<IpAddr> {
    match target.addr.ip() {
        IpAddr::V4(ip) if ip.octets()[0] == 127 => {
            Some(IpAddr::from([127, 0, 0, 1 + (index % 16) as u8]))
        }
        _ => None,
    }
}

/// Connects and upgrades, asking for `subprotocol` if given.
pub async fn connect(
    target: &Target,
    index: usize,
    subprotocol: Option<&str>,
) -> Result<(Reader, Writer)> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source_ip(target, index) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target.addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    upgrade(stream, target, subprotocol).await
}

async fn upgrade(
    mut stream: TcpStream,
    target: &Target,
    subprotocol: Option<&str>,
) -> Result<(Reader, Writer)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let protocol = subprotocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{protocol}\r\n",
        target.path, target.addr
    );
    stream.write_all(request.as_bytes()).await?;
    // Peek until the whole response head is there, then consume exactly it: frames that follow
    // in the same segment stay in the socket for the frame reader.
    let mut buf = [0u8; 4096];
    let head_len = loop {
        stream.readable().await?;
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            bail!("connection closed during the handshake");
        }
        if let Some(pos) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if n == buf.len() {
            bail!("handshake response head too long");
        }
    };
    let mut head = vec![0; head_len];
    stream.read_exact(&mut head).await?;
    let head = String::from_utf8_lossy(&head);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "101" {
        let first = head.lines().next().unwrap_or("");
        bail!("upgrade refused: {first}");
    }
    let (read, write) = stream.into_split();
    let (reader, writer) = fastwebsockets::after_handshake_split(read, write, Role::Client);
    let mut reader = reader;
    reader.set_auto_close(false);
    reader.set_auto_pong(false);
    reader.set_max_message_size(64 << 20);
    Ok((reader, Arc::new(Mutex::new(writer))))
}

/// Sends one text frame.
pub async fn send_text(writer: &Writer, text: &[u8]) -> Result<()> {
    writer
        .lock()
        .await
        .write_frame(Frame::text(Payload::Borrowed(text)))
        .await?;
    Ok(())
}

/// What the read half delivers.
pub enum Incoming {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Closed,
}

/// Reads the next data frame, answering pings (so the server never sees the client idle).
pub async fn next(reader: &mut Reader, writer: &Writer) -> Result<Incoming> {
    loop {
        let frame = reader
            .read_frame::<_, std::io::Error>(&mut |_| async { Ok(()) })
            .await?;
        match frame.opcode {
            OpCode::Text => return Ok(Incoming::Text(frame.payload.to_vec())),
            OpCode::Binary => return Ok(Incoming::Binary(frame.payload.to_vec())),
            OpCode::Close => return Ok(Incoming::Closed),
            OpCode::Ping => {
                let payload = frame.payload.to_vec();
                writer
                    .lock()
                    .await
                    .write_frame(Frame::pong(Payload::Owned(payload)))
                    .await?;
            }
            _ => {}
        }
    }
}

/// Sends a close frame (best effort).
pub async fn close(writer: &Writer) {
    let _ = writer
        .lock()
        .await
        .write_frame(Frame::close(1000, b""))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_loopback_ws_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (8080, "/ws"));
        assert_eq!(Target::parse("ws://127.0.0.1:1").unwrap().path, "/");
        assert!(Target::parse("ws://10.0.0.1:80/ws").is_err());
        assert!(Target::parse("http://127.0.0.1:80/ws").is_err());
        assert_eq!(
            Target::parse("ws://localhost:80/ws").unwrap().addr,
            "127.0.0.1:80".parse().unwrap()
        );
        assert!(
            Target::parse("ws://localhost/ws").is_err(),
            "a port is needed"
        );
        assert!(Target::parse("ws://example.com:80/ws").is_err());
    }
}
