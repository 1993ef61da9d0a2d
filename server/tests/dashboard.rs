//! The dashboard in a real browser: headless Chromium (Debian `chromium`), driven over the
//! DevTools protocol, loads `/dashboard` from a server under load, shows live figures that
//! change and match `/api/stats`, and is saved as a screenshot under `results/dashboard/`.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{Client, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "a dashboard key of 16+ bytes";

/// A headless Chromium and a DevTools session on its page.
struct Browser {
    _child: tokio::process::Child,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
    _profile: std::path::PathBuf,
}

impl Browser {
    async fn launch() -> Result<Browser> {
        let binary = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| which(b))
            .context("no chromium: install Debian's `chromium` (scripts/test.sh does)")?;
        let profile = support::fresh_store_dir();
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1440,1500",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let port = url.split(':').nth(2).and_then(|p| p.split('/').next());
                    return port.context("no port")?.parse::<u16>().map_err(Into::into);
                }
            }
            bail!("chromium exited")
        })
        .await??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let list = http_get(port, "/json/list")
            .await
            .context("devtools /json/list")?;
        let targets: Value = serde_json::from_str(&list)?;
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .context("no page target")?;
        let url = page["webSocketDebuggerUrl"]
            .as_str()
            .context("no debugger url")?;
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("devtools {url}"))?;
        Ok(Browser {
            _child: child,
            ws,
            next: 0,
            _profile: profile,
        })
    }

    /// Sends a DevTools command and waits for its result.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next += 1;
        let id = self.next;
        let command = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::Text(command.to_string())).await?;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await?
                .context("devtools closed")??;
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(&text)?;
            if value["id"] == id {
                if let Some(error) = value.get("error") {
                    bail!("{method}: {error}");
                }
                return Ok(value["result"].clone());
            }
        }
    }

    /// Evaluates `expression` in the page; its value.
    async fn eval(&mut self, expression: &str) -> Result<Value> {
        let params = json!({"expression": expression, "returnByValue": true});
        let result = self.call("Runtime.evaluate", params).await?;
        Ok(result["result"]["value"].clone())
    }
}

fn which(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

/// `GET path` from Chromium's DevTools HTTP server, which keeps the connection open: read
/// up to the announced length.
async fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if length.is_some_and(|l| body.len() >= l) || n == 0 {
                return Ok(body.to_string());
            }
        }
        if n == 0 {
            bail!("devtools closed before answering");
        }
    }
}

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

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let value = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {c}"),
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Ok(out)
}
