//! The dashboard in a real browser: headless Chromium (Debian `chromium`), driven over the
//! DevTools protocol, loads `/dashboard` from a server under load, shows live figures that
//! change and match `/api/stats`, and is saved as a screenshot under `results/dashboard/`.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use support::browser::{base64_decode, Browser};
use support::{Client, TestServer};

const KEY: &str = "a dashboard key of 16+ bytes";

/// The page's figures for its latest second: (t, {tile id: value}).
async fn shown(browser: &mut Browser) -> Result<(u64, Value)> {
    let t = browser.eval("Number(document.body.dataset.t || 0)").await?;
    let tiles = browser
        .eval(
            "Object.fromEntries([...document.querySelectorAll('.tile .value [id], .tile .value[id]')]\
             .map(e => [e.id, e.dataset.value]))",
        )
        .await?;
    Ok((t.as_u64().unwrap_or(0), tiles))
}

#[tokio::test]
async fn the_dashboard_shows_live_figures_that_match_the_api() -> Result<()> {
    let server = TestServer::start(&[
        ("SERVER_SHARDS", "2"),
        ("API_KEYS", &format!("[\"{KEY}\"]")),
    ])
    .await?;
    // Load: two subscribers, a publisher at about 200 messages a second, until the test ends.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut reader = Client::connect(&server).await?;
        reader.subscribe("ticker").await?;
        readers.push(reader);
    }
    let mut publisher = Client::connect(&server).await?;
    let load = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            n += 1;
            let publish = json!({"op": "publish", "channel": "ticker", "data": n});
            if publisher.send(publish).await.is_err() {
                return;
            }
        }
    });
    let drain = tokio::spawn(async move {
        loop {
            for reader in &mut readers {
                if reader.recv().await.is_err() {
                    return;
                }
            }
        }
    });
    let mut browser = Browser::launch().await.context("chromium")?;
    let url = format!(
        "{}#key={KEY}",
        server.url("/dashboard").replace("ws://", "http://")
    );
    browser.call("Page.navigate", json!({"url": url})).await?;
    // Live numbers: deliveries shown and above zero.
    let started = Instant::now();
    let (first_t, first) = loop {
        let (t, tiles) = shown(&mut browser).await?;
        let deliveries: f64 = tiles["v-deliveries"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if t > 0 && deliveries > 0.0 {
            break (t, tiles);
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("no live figures after 20 s: {tiles}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // They are the API's figures for that second.
    let (_, body) = server
        .http(
            "GET",
            "/api/stats",
            &[&format!("Authorization: Bearer {KEY}")],
        )
        .await?;
    let stats: Value = serde_json::from_str(&body)?;
    let point = stats["points"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["t"] == first_t))
        .with_context(|| format!("no point at {first_t}"))?;
    for (tile, field) in [
        ("v-connections", "connections"),
        ("v-received", "received_per_s"),
        ("v-deliveries", "deliveries_per_s"),
        ("v-cpu", "cpu"),
    ] {
        let on_page: f64 = first[tile].as_str().unwrap_or("").parse()?;
        let from_api = point[field].as_f64().context(field)?;
        assert_eq!(on_page, from_api, "{tile} vs {field}: {point}");
    }
    assert_eq!(first["v-connections"], "3");
    assert_eq!(
        browser
            .eval("document.getElementById('v-connections').textContent")
            .await?,
        "3"
    );
    // A few seconds on (DASHBOARD_TEST_S for a fuller screenshot), the page has moved on
    // by itself, with new figures.
    let wait = std::env::var("DASHBOARD_TEST_S")
        .ok()
        .and_then(|s| s.parse().ok());
    tokio::time::sleep(Duration::from_secs(wait.unwrap_or(3))).await;
    let (later_t, mut later) = shown(&mut browser).await?;
    assert!(later_t >= first_t + 2000, "{first_t} -> {later_t}");
    // Some figure (CPU, latency, memory, rates) moves within a few more seconds.
    let moving = Instant::now();
    while later == first && moving.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        later = shown(&mut browser).await?.1;
    }
    assert_ne!(first, later, "the figures changed");
    let charts = browser
        .eval("[...document.querySelectorAll('canvas')].filter(c => c.width > 0).length")
        .await?;
    assert_eq!(charts, 8);
    let shot = browser
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await?;
    let png = base64_decode(shot["data"].as_str().context("no screenshot")?)?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/dashboard");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("dashboard.png"), png)?;
    load.abort();
    drain.abort();
    Ok(())
}
