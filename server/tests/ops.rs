//! What an operator sees, over real sockets: `/metrics` counts what clients do, `/health`
//! follows the messages (a stalled shard or store turns it red within 3 s, and green after).

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use support::{Client, TestServer};

/// The value of the series `series` (name with its labels, as written) in a scrape.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(server: &TestServer) -> Result<String> {
    let (status, body) = server.get("/metrics").await?;
    anyhow::ensure!(status == 200, "{status}: {body}");
    Ok(body)
}

/// Scrapes until `series` reaches `at_least` (counters move as the shards get to them).
async fn wait_for(server: &TestServer, series: &str, at_least: f64) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(server).await?;
        // A close series appears with its first close.
        let value = metric(&text, series).unwrap_or(0.0);
        if value >= at_least {
            return Ok(text);
        }
        anyhow::ensure!(Instant::now() < deadline, "{series} = {value} < {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_connections_requests_deliveries_errors_and_closes() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut readers = Vec::new();
    for shard in 0..2 {
        let mut reader = Client::connect_on_shard(&server, shard).await?;
        reader.subscribe("room").await?;
        readers.push(reader);
    }
    let mut writer = Client::connect(&server).await?;
    for i in 0..10 {
        let publish = json!({"op": "publish", "channel": "room", "data": i});
        writer.request_ok(publish, "p").await?;
    }
    for reader in &mut readers {
        for _ in 0..10 {
            reader.recv_json().await?;
        }
    }
    writer
        .send_raw(tokio_tungstenite::tungstenite::Message::Text(
            "{nope".into(),
        ))
        .await?;
    assert_eq!(writer.recv_json().await?["code"], "invalid_json");
    let text = wait_for(&server, "wsedge_deliveries_total", 20.0).await?;
    let value = |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series}"));
    assert_eq!(
        value("wsedge_messages_received_total{op=\"publish\"}"),
        10.0
    );
    assert_eq!(
        value("wsedge_messages_received_total{op=\"subscribe\"}"),
        2.0
    );
    assert_eq!(value("wsedge_messages_received_total{op=\"invalid\"}"), 1.0);
    assert_eq!(value("wsedge_errors_total{code=\"invalid_json\"}"), 1.0);
    // connect_on_shard may open (and close) a few before it lands on the shard it wants.
    let upgrades = value("wsedge_upgrades_total");
    assert!(upgrades >= 3.0, "{upgrades}");
    let connections =
        value("wsedge_connections{shard=\"0\"}") + value("wsedge_connections{shard=\"1\"}");
    assert_eq!(connections, 3.0);
    let latency = value("wsedge_delivery_latency_seconds_count");
    assert!(latency >= 2.0, "{latency}");
    assert!(value("wsedge_delivery_latency_seconds_bucket{le=\"+Inf\"}") == latency);
    assert!(value("wsedge_sent_bytes_total") > 0.0 && value("wsedge_received_bytes_total") > 0.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") > 3.0);
    // A refused upgrade (a wrong path for a WebSocket, no key), then a peer's close.
    let (_, head) = support::raw_request(&server, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let dropped = "wsedge_closes_total{code=\"1006\",reason=\"abnormal\"}";
    let dropped = metric(&text, dropped).unwrap_or(0.0);
    assert_eq!(dropped, upgrades - 3.0, "the ones connect_on_shard dropped");
    writer.close().await?;
    let text = wait_for(
        &server,
        "wsedge_closes_total{code=\"1005\",reason=\"peer\"}",
        1.0,
    )
    .await?;
    assert_eq!(
        metric(&text, "wsedge_upgrade_rejections_total{status=\"426\"}"),
        Some(1.0)
    );
    Ok(())
}

/// Probes `/health` every 50 ms, each probe on a new connection with a 150 ms timeout, without
/// waiting for the one before: a probe that lands on the stalled shard (which answers only when
/// the stall ends, as a load balancer's check would see it) does not delay the next. Returns
/// when, after `started`, the first probe was sent that answered `status`, and that answer.
async fn until_health(
    server: &TestServer,
    status: u16,
    started: Instant,
    within: Duration,
) -> Result<(Duration, String)> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut probes = FuturesUnordered::new();
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let mut first: Option<(Duration, String)> = None;
    while started.elapsed() < within {
        tokio::select! {
            _ = every.tick() => probes.push(async {
                let sent = started.elapsed();
                let answer = tokio::time::timeout(Duration::from_millis(150), server.get("/health")).await;
                (sent, answer)
            }),
            Some((sent, answer)) = probes.next() => {
                if let Ok(Ok((got, body))) = answer {
                    if got == status && first.as_ref().is_none_or(|f| sent < f.0) {
                        first = Some((sent, body));
                    }
                }
            }
        }
        // Probes sent before the first match may still answer it; theirs are all in by now.
        if let Some((sent, _)) = &first {
            if started.elapsed() > *sent + Duration::from_millis(200) {
                return Ok(first.unwrap());
            }
        }
    }
    first.with_context(|| format!("/health did not answer {status} within {within:?}"))
}

#[tokio::test]
async fn health_goes_red_when_a_shard_or_the_store_stalls_and_green_after() -> Result<()> {
    let server = TestServer::start(&[
        ("SERVER_SHARDS", "2"),
        ("API_KEYS", r#"["a key of 16 bytes or more"]"#),
        ("API_FAULT_INJECTION", "true"),
    ])
    .await?;
    let key = "Authorization: Bearer a key of 16 bytes or more";
    until_health(&server, 200, Instant::now(), Duration::from_secs(5)).await?;
    for target in ["shard:1", "store"] {
        let stall = format!("/api/debug/stall?target={target}&ms=6000");
        let stalled = Instant::now();
        let (status, body) = server.http("POST", &stall, &[key]).await?;
        assert_eq!(status, 202, "{body}");
        let (red, body) = until_health(&server, 503, stalled, Duration::from_secs(6)).await?;
        // The last heartbeat (or confirmed canary) came at most 1 s before the stall and goes
        // stale 3 s after it: red within 3 s. The margin is for a noisy machine's scheduling.
        let bound = 3.3;
        assert!(red.as_secs_f64() <= bound, "{target}: red after {red:?}");
        let health: serde_json::Value = serde_json::from_str(&body)?;
        eprintln!("{target}: {health}");
        assert_eq!(health["status"], "degraded");
        let failing = health["failing"].to_string();
        let expected = if target == "store" {
            "store"
        } else {
            "shard 1's heartbeat"
        };
        assert!(failing.contains(expected), "{failing}");
        let (green, _) = until_health(&server, 200, stalled, Duration::from_secs(12)).await?;
        eprintln!("{target}: red {red:?} after the stall began, green {green:?} after (stall 6 s)");
        assert!(
            green.as_secs_f64() < 6.0 + 3.0,
            "{target}: green after {green:?}"
        );
        let metrics = scrape(&server).await?;
        assert_eq!(metric(&metrics, "wsedge_healthy"), Some(1.0));
    }
    // HEAD answers too; without fault injection the route is not there.
    assert_eq!(server.http("HEAD", "/health", &[]).await?.0, 200);
    let plain = TestServer::start(&[("API_KEYS", r#"["a key of 16 bytes or more"]"#)]).await?;
    let stall = "/api/debug/stall?target=store&ms=10";
    assert_eq!(plain.http("POST", stall, &[key]).await?.0, 404);
    Ok(())
}

/// Rule `name`'s entry in `/api/alerts`.
async fn alert_state(server: &TestServer, name: &str) -> Result<serde_json::Value> {
    let key = "Authorization: Bearer a key of 16 bytes or more";
    let (_, body) = server.http("GET", "/api/alerts", &[key]).await?;
    let alerts: serde_json::Value = serde_json::from_str(&body)?;
    let rule = alerts["alerts"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["name"] == name).cloned());
    Ok(rule.unwrap_or_default())
}

/// Accepts HTTP posts on loopback and hands their bodies over.
async fn webhook_receiver() -> Result<(String, tokio::sync::mpsc::Receiver<serde_json::Value>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_string)
                        })
                        .and_then(|l| l.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
                        if let Ok(value) = serde_json::from_str(body) {
                            let _ = tx.send(value).await;
                        }
                        break;
                    }
                }
            }
        }
    });
    Ok((url, rx))
}

#[tokio::test]
async fn an_alert_rule_fires_posts_to_the_webhook_and_resolves() -> Result<()> {
    let (url, mut posts) = webhook_receiver().await?;
    let mut config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/wsedge.toml"
    ))?;
    config.push_str(
        r#"
[[alerts]]
name = "BusyPublishing"
metric = "wsedge_messages_received_total"
labels = { op = "publish" }
aggregation = "rate"
window_s = 2
op = ">"
threshold = 20.0
for_s = 1
summary = "more than 20 publishes a second"
"#,
    );
    let dir = support::fresh_store_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("alerts.toml");
    std::fs::write(&path, config)?;
    let server = TestServer::start(&[
        ("CONFIG", path.to_str().unwrap()),
        ("ALERTING_WEBHOOK_URL", &url),
        ("API_KEYS", r#"["a key of 16 bytes or more"]"#),
    ])
    .await?;
    let key = "Authorization: Bearer a key of 16 bytes or more";
    assert_eq!(
        alert_state(&server, "BusyPublishing").await?["state"],
        "inactive"
    );
    // Shipped rules are there too.
    let (_, body) = server.http("GET", "/api/alerts", &[key]).await?;
    assert!(body.contains("DeliveryLatencyHigh") && body.contains("HealthCanaryStale"));
    // About 100 publishes a second until the webhook hears that it fires.
    let mut writer = Client::connect(&server).await?;
    let started = Instant::now();
    let fired = loop {
        for _ in 0..10 {
            writer
                .send(json!({"op": "publish", "channel": "c", "data": 1}))
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(post) = posts.try_recv() {
            break post;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "never fired");
    };
    assert_eq!(
        (&fired["name"], &fired["state"]),
        (&json!("BusyPublishing"), &json!("firing"))
    );
    assert!(fired["value"].as_f64().unwrap() > 20.0, "{fired}");
    assert_eq!(
        alert_state(&server, "BusyPublishing").await?["state"],
        "firing"
    );
    let text = scrape(&server).await?;
    assert!(text.contains("wsedge_alerts{alertname=\"BusyPublishing\",state=\"firing\"} 1"));
    // Quiet: it resolves.
    let resolved = tokio::time::timeout(Duration::from_secs(10), posts.recv()).await?;
    let resolved = resolved.expect("a post");
    assert_eq!(
        (&resolved["name"], &resolved["state"]),
        (&json!("BusyPublishing"), &json!("resolved"))
    );
    assert_eq!(
        alert_state(&server, "BusyPublishing").await?["state"],
        "resolved"
    );
    Ok(())
}
