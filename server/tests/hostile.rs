//! Hostile clients: input that once crashed, starved or bloated the server, each against a real
//! server over real sockets.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use support::{
    client_frame, masked_text, raw_request, raw_request_from, raw_upgrade, read_frame,
    read_until_close, upgrade_request, Client, TestServer, STEP,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn deeply_nested_json_is_invalid_json_and_the_server_stays_up() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "1")]).await?;
    let mut c = Client::connect(&server).await?;
    let nest = |open: &str, close: &str, n| format!("{}1{}", open.repeat(n), close.repeat(n));
    let arrays = nest("[", "]", 10_000);
    let objects = nest(r#"{"a":"#, "}", 10_000);
    for message in [
        arrays.clone(),
        format!(r#"{{"op":"echo","data":{objects}}}"#),
        format!(r#"{{"op":"ping","ref":{arrays}}}"#),
    ] {
        c.send_raw(Message::text(message)).await?;
        let reply = c.recv_json().await?;
        assert_eq!(reply["code"], "invalid_json", "{reply}");
        assert!(reply["message"]
            .as_str()
            .unwrap()
            .contains("max_json_depth"));
    }
    // Nesting within the limit is fine (100 levels: serde_json here reads at most 128).
    let within = format!(r#"{{"op":"echo","data":{}}}"#, nest("[", "]", 100));
    c.send_raw(Message::text(within)).await?;
    assert_eq!(c.recv_json().await?["op"], "echo");
    Client::connect(&server).await?;
    Ok(())
}

#[tokio::test]
async fn a_lone_surrogate_is_invalid_json_never_rewritten() -> Result<()> {
    let server = TestServer::start(&[]).await?;
    let mut c = Client::connect(&server).await?;
    for bad in [r#""\ud800""#, r#""\udc00x""#, r#"{"k\ud83d":1}"#] {
        let message = format!(r#"{{"op":"echo","data":{bad},"ref":1}}"#);
        c.send_raw(Message::text(message)).await?;
        let reply = c.recv_json().await?;
        assert_eq!(reply["code"], "invalid_json", "{bad}: {reply}");
    }
    c.send_raw(Message::text(r#"{"op":"echo","data":"\ud83d\ude00"}"#))
        .await?;
    assert_eq!(c.recv_json().await?["data"], "😀");
    Ok(())
}

/// Echo round trips of a victim on the only shard while an attacker on another connection sends
/// `prefix`, then `flood` over and over (reading and discarding what it gets); returns the
/// victim's worst round trip and the attacker's task.
async fn victim_worst_rtt(
    server: &TestServer,
    (prefix, flood): (Vec<u8>, Vec<u8>),
    rounds: usize,
) -> Result<(Duration, tokio::task::JoinHandle<()>)> {
    let mut victim = Client::connect(server).await?;
    let attacker = raw_upgrade(server).await?;
    let flood = spawn_flood(attacker, prefix, flood, Duration::from_secs(30));
    let mut worst = Duration::ZERO;
    for i in 0..rounds {
        let sent = Instant::now();
        victim.send(json!({"op": "echo", "data": i})).await?;
        let reply = victim.recv_json().await?;
        assert_eq!(reply["data"], i);
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await; // pacing the victim, not syncing
    }
    Ok((worst, flood))
}

/// Limits high enough that only fairness protects the victim.
const NO_LIMITS: [(&str, &str); 6] = [
    ("SERVER_SHARDS", "1"),
    ("LIMITS_MESSAGES_PER_S", "100000000"),
    ("LIMITS_MESSAGES_BURST", "100000000"),
    ("LIMITS_CONTROL_FRAMES_PER_S", "100000000"),
    ("LIMITS_CONTROL_FRAMES_BURST", "100000000"),
    ("CONNECTION_MAX_FRAGMENTS", "100000000"),
];

/// Writes `prefix`, then `chunk` over and over for at most `limit` or until the server stops
/// reading, while reading and discarding what the server sends.
fn spawn_flood(
    mut s: TcpStream,
    prefix: Vec<u8>,
    chunk: Vec<u8>,
    limit: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (mut r, mut w) = s.split();
        let read = async {
            let mut sink = vec![0; 1 << 16];
            while r.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        };
        let write = async {
            let started = Instant::now();
            let _ = w.write_all(&prefix).await;
            while started.elapsed() < limit {
                if w.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! { () = read => {}, () = write => {} }
    })
}

/// 64 KiB of `frame` over and over, after `prefix`.
fn flood_of(prefix: Vec<u8>, frame: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let count = (64 << 10) / frame.len();
    (prefix, frame.repeat(count))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_connection_does_not_starve_its_shard() -> Result<()> {
    let floods = [
        ("pings", flood_of(vec![], client_frame(true, 0x9, b""))),
        (
            "unknown ops",
            flood_of(vec![], masked_text(br#"{"op":"x"}"#)),
        ),
        (
            "empty fragments",
            flood_of(client_frame(false, 1, b""), client_frame(false, 0, b"")),
        ),
    ];
    for (name, attack) in floods {
        let server = TestServer::start(&NO_LIMITS).await?;
        let (worst, flood) = victim_worst_rtt(&server, attack, 200).await.context(name)?;
        flood.abort();
        // Before fairness, the victim waited 0.8-2.4 s; with it, 1-50 ms on a quiet machine
        // (186 ms once, while another build shared the two cores).
        assert!(
            worst < Duration::from_millis(500),
            "{name}: worst round trip {worst:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_within_the_grace_under_a_flood() -> Result<()> {
    let mut config = NO_LIMITS.to_vec();
    config.push(("SERVER_SHUTDOWN_GRACE_MS", "1000"));
    let server = TestServer::start(&config).await?;
    let attack = flood_of(vec![], client_frame(true, 0x9, b""));
    let (_, flood) = victim_worst_rtt(&server, attack, 10).await?;
    let started = Instant::now();
    let status = server.terminate().await?;
    flood.abort();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn floods_are_closed_by_the_default_limits() -> Result<()> {
    let server = TestServer::start(&[]).await?;
    for (attack, reason) in [
        (client_frame(true, 0x9, b""), "too many pings"),
        (client_frame(false, 0, b""), "max_fragments"),
    ] {
        let mut s = raw_upgrade(&server).await?;
        let mut wire = client_frame(false, 2, b"x");
        wire.extend(attack.repeat(20_000));
        // The server may close before it has read everything.
        let _ = s.write_all(&wire).await;
        let frames = read_until_close(s).await?;
        let (_, close) = frames.last().unwrap();
        assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1008);
        assert!(String::from_utf8_lossy(&close[2..]).contains(reason));
    }
    Ok(())
}

#[tokio::test]
async fn requests_over_the_rate_limit_are_refused_then_the_connection_closed() -> Result<()> {
    let server = TestServer::start(&[
        ("LIMITS_MESSAGES_PER_S", "1"),
        ("LIMITS_MESSAGES_BURST", "5"),
        ("LIMITS_VIOLATIONS_BEFORE_CLOSE", "3"),
    ])
    .await?;
    let mut c = Client::connect(&server).await?;
    for i in 0..8 {
        c.send(json!({"op": "ping", "ref": i})).await?;
    }
    for i in 0..5 {
        assert_eq!(c.recv_json().await?, json!({"op": "pong", "ref": i}));
    }
    for _ in 0..2 {
        assert_eq!(c.recv_json().await?["code"], "rate_limited");
    }
    assert_eq!(
        c.expect_close().await?,
        (1008, "rate limit exceeded".into())
    );

    // Published bytes have their own bucket, and its refusal carries the ref.
    let server = TestServer::start(&[
        ("CONNECTION_MAX_MESSAGE_SIZE", "1024"),
        ("LIMITS_PUBLISH_BYTES_PER_S", "1"),
        ("LIMITS_PUBLISH_BURST_BYTES", "1024"),
    ])
    .await?;
    let mut c = Client::connect(&server).await?;
    let data = "x".repeat(600);
    c.request_ok(json!({"op": "publish", "channel": "c", "data": data}), "a")
        .await?;
    c.send(json!({"op": "publish", "channel": "c", "data": data, "ref": "b"}))
        .await?;
    let reply = c.recv_json().await?;
    assert_eq!(
        (&reply["code"], &reply["ref"]),
        (&json!("rate_limited"), &json!("b"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_publish_flood_stays_within_the_queue_budget() -> Result<()> {
    let server = TestServer::start(&[
        ("SERVER_SHARDS", "2"),
        ("SERVER_SHARD_QUEUE_MAX_BYTES", "33554432"),
        // Only the queue bound, not the rate limit, may hold this flood back.
        ("LIMITS_PUBLISH_BYTES_PER_S", "1000000000000"),
        ("LIMITS_PUBLISH_BURST_BYTES", "1000000000000"),
    ])
    .await?;
    let baseline = server.rss_kib();
    let message =
        json!({"op": "publish", "channel": "nobody", "data": "x".repeat(64 << 10)}).to_string();
    let frame = masked_text(message.as_bytes());
    let mut publishers = Vec::new();
    for _ in 0..4 {
        let s = raw_upgrade(&server).await?;
        publishers.push(spawn_flood(
            s,
            vec![],
            frame.clone(),
            Duration::from_secs(3),
        ));
    }
    let mut peak = baseline;
    while publishers.iter().any(|p| !p.is_finished()) {
        peak = peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(20)).await; // sampling RSS
    }
    let grown_mib = (peak - baseline) / 1024;
    // Two queues of 32 MiB, the shards' buffers and the publishers' messages in flight; before
    // the byte bound it grew by about 400 MB/s.
    assert!(grown_mib < 192, "RSS grew by {grown_mib} MiB");
    Client::connect(&server).await?;
    // And the memory goes back to the OS once the flood is over (each shard returns what its
    // allocator freed every second).
    let mut after = u64::MAX;
    for _ in 0..100 {
        after = server.rss_kib().saturating_sub(baseline) / 1024;
        if after < 12 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // sampling RSS
    }
    anyhow::bail!(
        "RSS still {after} MiB over its baseline 10 s after the flood (peak +{grown_mib} MiB)"
    )
}

#[tokio::test]
async fn partial_frames_hold_what_arrived_not_what_they_announce() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "1")]).await?;
    let mut header = client_frame(true, 2, &vec![0; (1 << 20) - 1]);
    header.truncate(14 + 1);
    let baseline = server.rss_kib();
    let mut sockets = Vec::new();
    for _ in 0..2000 {
        let mut s = raw_upgrade(&server).await?;
        read_frame(&mut s).await?; // the welcome: the connection is open
        s.write_all(&header).await?;
        sockets.push(s);
    }
    // The highest of a few samples over half a second, once a new connection's ping is
    // answered: the shard has long read the partial frames by then.
    let mut c = Client::connect(&server).await?;
    c.send(json!({"op": "ping"})).await?;
    c.recv_json().await?;
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await; // sampling RSS
    }
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    // About 2 GB before: each held its announced 1 MiB.
    assert!(
        grown_mib < 64,
        "RSS grew by {grown_mib} MiB for 2000 partial frames"
    );
    Ok(())
}

#[tokio::test]
async fn past_the_open_file_limit_connections_get_503_not_silence() -> Result<()> {
    let server = TestServer::start_with_nofile(&[("SERVER_SHARDS", "1")], Some(160)).await?;
    let health = server.health().await?;
    let max = health["max_connections"]
        .as_u64()
        .context("max_connections")?;
    assert_eq!(max, 160 - 64, "{health}");
    let (mut upgraded, mut refused) = (Vec::new(), 0);
    for _ in 0..200 {
        let (s, head) = raw_request(&server, upgrade_request("/ws").as_bytes()).await?;
        if head.starts_with("HTTP/1.1 101") {
            upgraded.push(s);
        } else {
            assert!(head.starts_with("HTTP/1.1 503"), "{head}");
            refused += 1;
        }
    }
    assert_eq!(upgraded.len() as u64, max);
    assert_eq!(refused, 200 - max);
    // A health probe is answered too, 503 when it cannot be served.
    let (_, head) = raw_request(&server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    drop(upgraded);
    Ok(())
}

#[tokio::test]
async fn connections_past_the_handshake_budget_get_503_at_once() -> Result<()> {
    let server = TestServer::start(&[
        ("SERVER_SHARDS", "1"),
        ("SERVER_MAX_REQUEST_BYTES", "8192"),
        ("SERVER_HANDSHAKE_BUDGET_BYTES", "32768"),
    ])
    .await?;
    // Four connections that never finish their request fill a budget of 4 x 8192 bytes.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr).await?;
        s.write_all(b"GET /health HTTP/1.1\r\n").await?;
        idle.push(s);
    }
    // Until the server has accepted all four, a probe may still be served: poll its answer.
    let probe = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut refused = false;
    for _ in 0..100 {
        let (_, head) = raw_request(&server, probe).await?;
        if head.starts_with("HTTP/1.1 503") {
            refused = true;
            break;
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the accept
    }
    assert!(refused, "the fifth connection was served");
    // A finished handshake frees its share of the budget.
    drop(idle);
    for _ in 0..100 {
        if raw_request(&server, probe)
            .await?
            .1
            .starts_with("HTTP/1.1 200")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the server's close
    }
    anyhow::bail!("the budget was not freed")
}

#[tokio::test]
async fn the_handshake_follows_rfc_6455() -> Result<()> {
    let server = TestServer::start(&[]).await?;
    let good = upgrade_request("/ws");
    let cases = [
        ("no Host", good.replace("Host: x\r\n", ""), "400"),
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0"), "400"),
        (
            "empty key",
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", ""),
            "400",
        ),
        (
            "short key",
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            "400",
        ),
        (
            "not base64",
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j!!=="),
            "400",
        ),
        (
            "huge headers",
            good.replace(
                "Host: x\r\n",
                &format!("Host: x\r\nX-Pad: {}\r\n", "p".repeat(20_000)),
            ),
            "431",
        ),
    ];
    for (name, request, status) in cases {
        let (mut s, head) = raw_request(&server, request.as_bytes()).await?;
        assert_eq!(head.split(' ').nth(1), Some(status), "{name}: {head}");
        if status == "400" {
            let mut body = vec![0; 512];
            let n = tokio::time::timeout(STEP, s.read(&mut body)).await??;
            let body: Value = serde_json::from_slice(&body[..n])?;
            assert_eq!(body["error"], "bad_handshake", "{name}");
        }
    }
    raw_upgrade(&server).await?;
    Ok(())
}

/// Publishes one message on a fresh server and returns its id.
async fn first_message_id() -> Result<String> {
    let server = TestServer::start(&[("SERVER_SHARDS", "1")]).await?;
    let mut c = Client::connect(&server).await?;
    c.subscribe("c").await?;
    c.send(json!({"op": "publish", "channel": "c", "data": 1}))
        .await?;
    let id = c.recv_json().await?["id"]
        .as_str()
        .context("id")?
        .to_string();
    drop(c);
    server.terminate().await?;
    Ok(id)
}

#[tokio::test]
async fn message_ids_stay_unique_across_quick_restarts() -> Result<()> {
    let mut ids = BTreeSet::new();
    for _ in 0..4 {
        let id = first_message_id().await?;
        assert!(ids.insert(id.clone()), "{id} repeated");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_means_delivered_nowhere() -> Result<()> {
    let server =
        TestServer::start(&[("SERVER_SHARDS", "2"), ("SERVER_SHARD_QUEUE_CAPACITY", "2")]).await?;
    let mut publisher = Client::connect_on_shard(&server, 0).await?;
    let mut remote = Client::connect_on_shard(&server, 1).await?;
    publisher.subscribe("c").await?;
    remote.subscribe("c").await?;
    const N: u64 = 3000;
    for i in 0..N {
        publisher
            .send(json!({"op": "publish", "channel": "c", "data": i, "ref": i}))
            .await?;
    }
    let (mut accepted, mut refused, mut local) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    while accepted.len() + refused.len() < N as usize {
        let m = publisher.recv_json().await?;
        match m["op"].as_str() {
            Some("ok") => accepted.insert(m["ref"].as_u64().unwrap()),
            Some("error") => {
                assert_eq!(m["code"], "overloaded", "{m}");
                assert!(!m["message"].as_str().unwrap().contains("message "), "{m}");
                refused.insert(m["ref"].as_u64().unwrap())
            }
            _ => local.insert(m["data"].as_u64().unwrap()),
        };
    }
    assert!(!refused.is_empty(), "no publish was refused: raise N");
    // A last message, retried until accepted, marks the end of both streams.
    loop {
        publisher
            .send(json!({"op": "publish", "channel": "c", "data": N, "ref": "end"}))
            .await?;
        let reply = loop {
            let m = publisher.recv_json().await?;
            if m["op"] == "message" {
                local.insert(m["data"].as_u64().unwrap());
            } else {
                break m;
            }
        };
        if reply["op"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // backing off before a retry
    }
    while !local.contains(&N) {
        local.insert(publisher.recv_json().await?["data"].as_u64().unwrap());
    }
    let mut far = BTreeSet::new();
    while !far.contains(&N) {
        far.insert(remote.recv_json().await?["data"].as_u64().unwrap());
    }
    local.remove(&N);
    far.remove(&N);
    assert_eq!(local, accepted, "the publisher's own shard");
    assert_eq!(far, accepted, "the other shard");
    Ok(())
}

/// Sends an upgrade request from `source` (a 127.0.0.0/8 address); returns the status.
async fn upgrade_from(server: &TestServer, source: &str) -> Result<(TcpStream, String)> {
    raw_request_from(server, source, upgrade_request("/ws").as_bytes()).await
}

#[tokio::test]
async fn one_address_is_held_to_its_connection_limits() -> Result<()> {
    let server = TestServer::start(&[("SERVER_MAX_CONNECTIONS_PER_IP", "3")]).await?;
    let mut open = Vec::new();
    for _ in 0..3 {
        let (s, head) = upgrade_from(&server, "127.0.0.1").await?;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        open.push(s);
    }
    let (_, head) = upgrade_from(&server, "127.0.0.1").await?;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    // Another address is not affected, and a closed connection frees its place.
    let (_, head) = upgrade_from(&server, "127.0.0.2").await?;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    drop(open.pop());
    let mut admitted = false;
    for _ in 0..100 {
        let (s, head) = upgrade_from(&server, "127.0.0.1").await?;
        if head.starts_with("HTTP/1.1 101") {
            admitted = true;
            open.push(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the server's close
    }
    assert!(admitted, "a closed connection did not free its place");

    let server = TestServer::start(&[("SERVER_NEW_CONNECTIONS_PER_IP_PER_S", "5")]).await?;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let (s, head) = upgrade_from(&server, "127.0.0.3").await?;
        statuses.push(head[9..12].to_string());
        drop(s);
    }
    let admitted = statuses.iter().filter(|s| *s == "101").count();
    // 20 connections in well under two seconds: at most two windows of 5.
    assert!((5..=10).contains(&admitted), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| s == "101" || s == "429"),
        "{statuses:?}"
    );
    Ok(())
}
