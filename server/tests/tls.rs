//! TLS (`[tls]`) and `server.allowed_origins`, against a real server over real sockets.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use support::{raw_request, upgrade_request, TestServer, STEP};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A self-signed certificate for localhost in a fresh directory: (cert file, key file, DER).
fn certificate(name: &str) -> Result<(PathBuf, PathBuf, CertificateDer<'static>)> {
    let dir = std::env::temp_dir().join(format!("wsedge-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem())?;
    std::fs::write(&key, generated.key_pair.serialize_pem())?;
    Ok((cert, key, generated.cert.der().clone()))
}

async fn tls_server(name: &str) -> Result<(TestServer, CertificateDer<'static>)> {
    let (cert, key, der) = certificate(name)?;
    let server = TestServer::start(&[
        ("TLS_CERT_FILE", cert.to_str().unwrap()),
        ("TLS_KEY_FILE", key.to_str().unwrap()),
        ("CONNECTION_MAX_MESSAGE_SIZE", "4194304"),
        ("CONNECTION_OUTBOX_MAX_BYTES", "16777216"),
    ])
    .await?;
    Ok((server, der))
}

/// A TLS connection to `server` trusting only `root`.
async fn tls_connect(
    server: &TestServer,
    root: &CertificateDer<'static>,
) -> Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await?;
    let name = ServerName::try_from("localhost")?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

async fn wss(
    server: &TestServer,
    root: &CertificateDer<'static>,
) -> Result<WebSocketStream<TlsStream<TcpStream>>> {
    let stream = tls_connect(server, root).await?;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    assert_eq!(next_json(&mut ws).await?["op"], "welcome");
    Ok(ws)
}

async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Result<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(STEP, ws.next())
            .await
            .context("timed out")?
            .context("stream ended")??;
        match m {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_carries_the_protocol_and_large_messages() -> Result<()> {
    let (server, root) = tls_server("protocol").await?;
    let mut a = wss(&server, &root).await?;
    let mut b = wss(&server, &root).await?;
    b.send(Message::text(
        json!({"op": "subscribe", "channel": "c", "ref": 1}).to_string(),
    ))
    .await?;
    assert_eq!(next_json(&mut b).await?, json!({"op": "ok", "ref": 1}));
    // Messages far larger than the TLS session's 64 KiB send buffer, several in a row.
    let big = "x".repeat(3 << 20);
    for i in 0..3 {
        let m = json!({"op": "publish", "channel": "c", "data": format!("{i}{big}")});
        a.send(Message::text(m.to_string())).await?;
    }
    for i in 0..3 {
        let m = next_json(&mut b).await?;
        let data = m["data"].as_str().context("data")?;
        assert!(data.starts_with(&i.to_string()) && data.len() == big.len() + 1);
    }
    a.send(Message::text(json!({"op": "ping", "ref": "p"}).to_string()))
        .await?;
    assert_eq!(next_json(&mut a).await?, json!({"op": "pong", "ref": "p"}));
    a.close(None).await?;
    Ok(())
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_upgrade() -> Result<()> {
    let (server, _) = tls_server("plain").await?;
    let mut s = TcpStream::connect(server.addr).await?;
    s.write_all(upgrade_request("/ws").as_bytes()).await?;
    let mut reply = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut reply);
    let _ = tokio::time::timeout(STEP, read).await.context("no close")?;
    assert!(!String::from_utf8_lossy(&reply).contains("101"));
    Ok(())
}

#[test]
fn a_missing_certificate_stops_the_start_naming_the_key() -> Result<()> {
    let (_, key, _) = certificate("missing")?;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .args(["--listen", "127.0.0.1:0"])
        .env("WSEDGE_TLS_CERT_FILE", "/nonexistent/cert.pem")
        .env("WSEDGE_TLS_KEY_FILE", &key)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tls.cert_file /nonexistent/cert.pem"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn only_allowed_origins_may_upgrade() -> Result<()> {
    let server = TestServer::start(&[(
        "SERVER_ALLOWED_ORIGINS",
        r#"["https://app.example.com", "http://localhost:3000"]"#,
    )])
    .await?;
    let with_origin = |origin: &str| {
        upgrade_request("/ws").replace("Host: x\r\n", &format!("Host: x\r\nOrigin: {origin}\r\n"))
    };
    for (origin, status) in [
        ("https://app.example.com", "101"),
        ("HTTPS://APP.EXAMPLE.COM", "101"),
        ("http://localhost:3000", "101"),
        ("https://evil.example.com", "403"),
        ("null", "403"),
    ] {
        let (_, head) = raw_request(&server, with_origin(origin).as_bytes()).await?;
        assert_eq!(head.split(' ').nth(1), Some(status), "{origin}: {head}");
    }
    // Agents send no Origin.
    let (_, head) = raw_request(&server, upgrade_request("/ws").as_bytes()).await?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    Ok(())
}

#[tokio::test]
async fn a_stalled_or_garbage_tls_handshake_is_dropped() -> Result<()> {
    let (cert, key, _) = certificate("stalled")?;
    let server = TestServer::start(&[
        ("TLS_CERT_FILE", cert.to_str().unwrap()),
        ("TLS_KEY_FILE", key.to_str().unwrap()),
        ("SERVER_HANDSHAKE_TIMEOUT_MS", "300"),
    ])
    .await?;
    // The first bytes of a ClientHello, then silence: closed at handshake_timeout_ms.
    for first in [&b"\x16\x03\x01\x02\x00\x01"[..], &[0xff; 64][..]] {
        let mut s = TcpStream::connect(server.addr).await?;
        s.write_all(first).await?;
        let mut reply = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut reply);
        // An alert or nothing, then the close (a reset counts as closed too).
        // Well before the default 10 s, so the configured 300 ms is what ended it.
        let within = std::time::Duration::from_secs(3);
        let _ = tokio::time::timeout(within, read)
            .await
            .context("not closed")?;
        assert!(!String::from_utf8_lossy(&reply).contains("HTTP"));
    }
    Ok(())
}
