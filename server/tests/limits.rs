//! Limits and lifecycle: message size, connection cap, slow consumers, idle and handshake
//! timeouts, and shutdown on SIGTERM.

mod support;

use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use serde_json::json;
use support::{masked_text, raw_upgrade, read_until_close, Client, TestServer, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn oversize_message_is_closed_with_1009() -> Result<()> {
    let server = TestServer::start(&[("CONNECTION_MAX_MESSAGE_SIZE", "1024")]).await?;
    let mut c = Client::connect(&server).await?;
    c.send_raw(Message::text("x".repeat(1025))).await?;
    assert_eq!(c.expect_close().await?.0, 1009);
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503() -> Result<()> {
    let server = TestServer::start(&[("SERVER_MAX_CONNECTIONS", "2")]).await?;
    let _a = Client::connect(&server).await?;
    let b = Client::connect(&server).await?;
    match tokio_tungstenite::connect_async(server.url("/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    // A closed connection frees its slot.
    drop(b);
    let mut waited = 0;
    while server.health().await?["connections"] != 1 {
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the server's own gauge
        waited += 1;
        assert!(waited < 500, "slot not released");
    }
    Client::connect(&server).await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_sends_1001_and_exits_zero() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut clients = vec![
        Client::connect_on_shard(&server, 0).await?,
        Client::connect_on_shard(&server, 1).await?,
    ];
    let exit = tokio::spawn(server.terminate());
    for c in &mut clients {
        let (code, reason) = c.expect_close().await?;
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    }
    drop(clients);
    assert!(exit.await??.success());
    Ok(())
}

/// A one-shard server with a small outbox, a raw subscriber to `channel` that reads nothing,
/// and a publisher; returns once the subscribe has been handled.
async fn slow_subscriber(
    channel: &str,
    extra: &[(&str, &str)],
) -> Result<(TestServer, TcpStream, Client)> {
    let mut config = vec![
        ("SERVER_SHARDS", "1"),
        ("CONNECTION_MAX_MESSAGE_SIZE", "65536"),
        ("CONNECTION_OUTBOX_MAX_BYTES", "262144"),
    ];
    config.extend_from_slice(extra);
    let server = TestServer::start(&config).await?;
    let mut slow = raw_upgrade(&server).await?;
    let subscribe = format!(r#"{{"op":"subscribe","channel":"{channel}"}}"#);
    slow.write_all(&masked_text(subscribe.as_bytes())).await?;
    let mut publisher = Client::connect(&server).await?;
    publisher.send(json!({"op": "ping"})).await?; // one shard: the subscribe is handled before this pong
    publisher.recv_json().await?;
    Ok((server, slow, publisher))
}

/// Publishes `count` messages of 32 KiB to `channel`, then waits until the server handled them.
async fn publish_many(
    publisher: &mut Client,
    channel: &str,
    count: usize,
    priority: &str,
) -> Result<()> {
    let payload = "x".repeat(32 * 1024);
    for _ in 0..count {
        let m = json!({"op": "publish", "channel": channel, "data": payload, "priority": priority});
        publisher.send(m).await?;
    }
    publisher.send(json!({"op": "ping", "ref": "done"})).await?;
    assert_eq!(publisher.recv_json().await?["ref"], "done");
    Ok(())
}

/// Continues a raw upgraded socket as a tungstenite client.
async fn into_client(s: TcpStream) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        s,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await
}

#[tokio::test]
async fn a_never_reading_client_is_cut_off_and_server_memory_stays_bounded() -> Result<()> {
    let (server, slow, mut publisher) =
        slow_subscriber("firehose", &[("CONNECTION_CLOSE_TIMEOUT_MS", "60000")]).await?;
    let rss_before = server.rss_kib();
    const MESSAGES: usize = 2000; // 64 MiB towards a client that reads nothing
    publish_many(&mut publisher, "firehose", MESSAGES, "normal").await?;
    let grown_kib = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown_kib < 32 * 1024,
        "server RSS grew {grown_kib} KiB for a client that reads nothing"
    );

    // Now read: some messages (what the kernel buffered), then close 1008 "slow consumer".
    let mut ws = into_client(slow).await;
    let mut received = 0;
    let close = loop {
        match tokio::time::timeout(STEP, ws.next())
            .await?
            .expect("close frame before EOF")?
        {
            Message::Text(_) => received += 1,
            Message::Close(frame) => break frame.expect("a close code"),
            _ => {}
        }
    };
    assert_eq!(
        (u16::from(close.code), &*close.reason),
        (1008, "slow consumer")
    );
    assert!(
        received < MESSAGES,
        "received {received} of {MESSAGES}: some must have been dropped"
    );
    Ok(())
}

#[tokio::test]
async fn low_priority_is_dropped_for_a_slow_client_without_closing_it() -> Result<()> {
    let (_server, slow, mut publisher) = slow_subscriber("low", &[]).await?;
    publish_many(&mut publisher, "low", 1000, "low").await?;
    let mut ws = into_client(slow).await;
    use futures_util::SinkExt;
    ws.send(Message::text(r#"{"op":"ping","ref":"alive"}"#))
        .await?;
    let mut received = 0;
    loop {
        let m = tokio::time::timeout(STEP, ws.next())
            .await?
            .expect("open")?;
        match m {
            Message::Text(t) if t.contains(r#""op":"pong""#) => break,
            Message::Text(_) => received += 1,
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    assert!(
        received > 0 && received < 1000,
        "received {received} of 1000 low messages"
    );
    Ok(())
}

#[tokio::test]
async fn idle_clients_are_pinged_then_closed() -> Result<()> {
    let server = TestServer::start(&[
        ("CONNECTION_PING_INTERVAL_MS", "100"),
        ("CONNECTION_IDLE_TIMEOUT_MS", "600"),
    ])
    .await?;
    // A client that answers pings (tungstenite does, while it reads) is not idle.
    let mut live = Client::connect(&server).await?;
    let mut pings = 0;
    while pings < 8 {
        match tokio::time::timeout(STEP, live.ws.next())
            .await?
            .expect("open")?
        {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    live.send(json!({"op": "ping", "ref": 1})).await?;
    assert_eq!(live.recv_json().await?["op"], "pong");
    // A client that never answers (a raw socket: no automatic pongs) is closed with 1001.
    let silent = raw_upgrade(&server).await?;
    let frames = tokio::time::timeout(STEP, read_until_close(silent)).await??;
    let (opcode, payload) = frames.last().expect("frames");
    assert_eq!(*opcode, 0x8, "last frame is a close");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    assert_eq!(&payload[2..], b"idle timeout");
    assert!(
        frames.iter().any(|(op, _)| *op == 0x9),
        "pinged before being closed"
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_that_sends_no_request_is_dropped_after_the_handshake_timeout() -> Result<()> {
    let server = TestServer::start(&[("SERVER_HANDSHAKE_TIMEOUT_MS", "200")]).await?;
    let mut s = TcpStream::connect(server.addr).await?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(STEP, s.read(&mut buf)).await??;
    assert_eq!(n, 0, "expected EOF");
    Ok(())
}

#[tokio::test]
async fn a_second_server_on_a_served_port_fails_to_start() -> Result<()> {
    let server = TestServer::start(&[]).await?;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .args(["--listen", &server.addr.to_string()])
        .env("WSEDGE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // A second server that starts runs until killed: give it STEP to exit.
    let output = tokio::time::timeout(STEP, second.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("the second server started on {}", server.addr))??;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {}", server.addr))
            && stderr.contains("Address already in use"),
        "{stderr}"
    );
    // The first one still serves.
    Client::connect(&server).await?;
    Ok(())
}
