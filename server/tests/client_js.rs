//! The browser client (`GET /client/wsedge.js`) in a real browser, headless Chromium, against a
//! real server that is killed (SIGKILL) and restarted on the same port and store mid-test. The
//! page publishes throughout, buffering while the server is away; another client publishes
//! while the page is away. The page must reconnect by itself, recover what it missed
//! (`recovered:true`, durable history) and end with every message exactly once. Without durable
//! history the page is told `recovered:false`.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use support::browser::Browser;
use support::{Client, TestServer};

/// Messages the page publishes, one every 10 ms.
const PAGE: u64 = 300;
/// Messages the other client publishes, half before the crash and half after the restart.
const OTHER: u64 = 100;

/// The page's test state (`window.t`), read back.
async fn page(browser: &mut Browser) -> Result<Value> {
    browser
        .eval("JSON.parse(JSON.stringify({got: t.got, states: t.states, recoveries: t.recoveries, errors: t.errors, sent: t.sent, offline: t.offline, confirmed: t.confirmed, failed: t.failed, state: t.client.state}))")
        .await
}

/// Polls the page until `done` holds for its state (at most `within`).
async fn until(
    browser: &mut Browser,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let start = Instant::now();
    loop {
        let t = page(browser).await?;
        if done(&t) {
            return Ok(t);
        }
        if start.elapsed() > within {
            bail!("{what}: not after {within:?}; the page has {t}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Headless Chromium on the server's example page (`/client/example`), where the tests import
/// the module from.
async fn example_page(server: &TestServer) -> Result<Browser> {
    let mut browser = Browser::launch().await.context("chromium")?;
    let page = format!("http://{}/client/example", server.addr);
    browser.open(&page).await?;
    Ok(browser)
}

/// The strings of a JSON array.
fn strings(array: &Value) -> Vec<&str> {
    array
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Publishes `from..to` as `r<n>` to `room`, each confirmed.
async fn publish_others(server: &TestServer, from: u64, to: u64) -> Result<()> {
    let mut other = Client::connect(server).await?;
    for n in from..to {
        let publish = json!({"op": "publish", "channel": "room", "data": format!("r{n}"), "msg_id": format!("r{n}")});
        other.request_ok(publish, &format!("r{n}")).await?;
    }
    other.close().await
}

#[tokio::test]
async fn the_browser_client_survives_a_server_restart_with_every_message_once() -> Result<()> {
    let store = support::fresh_store_dir();
    let store_path = store.to_string_lossy().to_string();
    let mut overrides = support::durable_history(&store_path);
    let server = TestServer::start(&overrides).await?;
    let addr = server.addr.to_string();
    // The example page works: served by the server, connected through the module.
    let mut browser = example_page(&server).await?;
    let start = Instant::now();
    while browser
        .eval("document.getElementById('state').textContent")
        .await?
        != "connected"
    {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the example page did not connect");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The test's own client, in the same page.
    let setup = r#"(async () => {
        const { connect } = await import('/client/wsedge.js');
        const t = window.t = { got: [], states: [], recoveries: [], errors: [], sent: 0, offline: 0, confirmed: 0, failed: [] };
        const c = t.client = connect(`ws://${location.host}/ws`, { minDelay: 300, maxDelay: 1000, heartbeat: 1000, grace: 2000 });
        c.on('state', (e) => t.states.push(e.state));
        c.on('error', (e) => t.errors.push(String(e)));
        const sub = c.subscribe('room', (m) => { t.got.push(m.data); });
        sub.on('recovery', (e) => t.recoveries.push(e));
        await sub.ready;
        t.timer = setInterval(() => {
            if (t.sent >= PAGE) return clearInterval(t.timer);
            const n = ++t.sent;
            if (c.state !== 'connected') t.offline++;
            c.publish('room', 'p' + n).then(() => t.confirmed++, (e) => t.failed.push(String(e)));
        }, 10);
        return c.state;
    })()"#
        .replace("PAGE", &PAGE.to_string());
    assert_eq!(browser.eval_await(&setup).await?, "connected");

    // A publish whose `ok` will count as lost: resent after the restart with the same msg_id.
    let first = browser
        .eval_await(
            "t.client.publish('room', 'once', {msgId: 'once-1'}).then((ok) => !!ok.duplicate)",
        )
        .await?;
    assert_eq!(first, false);

    // Others publish too; then, a third of the way through the page's publishes, a crash.
    publish_others(&server, 1, OTHER / 2 + 1).await?;
    until(
        &mut browser,
        Duration::from_secs(20),
        "a third published",
        |t| t["sent"].as_u64() >= Some(PAGE / 3),
    )
    .await?;
    server.kill9().await?;
    // The page notices and keeps publishing into its buffer.
    let away = until(&mut browser, Duration::from_secs(10), "disconnected", |t| {
        t["state"] != "connected"
    })
    .await?;
    let sent_when_lost = away["sent"].as_u64().unwrap_or(0);
    until(&mut browser, Duration::from_secs(10), "buffering", |t| {
        t["sent"].as_u64() >= Some(sent_when_lost + 20)
    })
    .await?;

    // The restart, on the same port and store; others publish at once, while the page is
    // (most likely) still waiting out its backoff.
    overrides.push(("LISTEN", &addr));
    let server = TestServer::start(&overrides).await?;
    publish_others(&server, OTHER / 2 + 1, OTHER + 1).await?;

    // The resend of a publish confirmed before the crash is a duplicate, delivered nowhere.
    let resent = browser
        .eval_await(
            "t.client.publish('room', 'once', {msgId: 'once-1'}).then((ok) => !!ok.duplicate)",
        )
        .await?;
    assert_eq!(
        resent, true,
        "a resend after the restart was published again"
    );

    let expected = PAGE + OTHER + 1;
    let t = until(
        &mut browser,
        Duration::from_secs(60),
        "everything once",
        |t| {
            t["confirmed"].as_u64() == Some(PAGE)
                && t["got"].as_array().map_or(0, Vec::len) as u64 >= expected
        },
    )
    .await?;
    let got = strings(&t["got"]);
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    let duplicates = got.len() - unique.len();
    eprintln!(
        "restart test: the page published {PAGE} ({} while disconnected), another client {OTHER}; the page received {} ({} distinct, {duplicates} duplicates); states {}; recoveries {}",
        t["offline"],
        got.len(),
        unique.len(),
        t["states"],
        t["recoveries"]
    );
    assert_eq!(t["failed"], json!([]), "publishes refused");
    assert!(
        t["offline"].as_u64() >= Some(20),
        "published while away: {}",
        t["offline"]
    );
    assert_eq!(duplicates, 0, "duplicates: {got:?}");
    for n in 1..=PAGE {
        assert!(
            unique.binary_search(&format!("p{n}").as_str()).is_ok(),
            "p{n} missing"
        );
    }
    for n in 1..=OTHER {
        assert!(
            unique.binary_search(&format!("r{n}").as_str()).is_ok(),
            "r{n} missing"
        );
    }
    assert!(unique.binary_search(&"once").is_ok(), "once missing");
    assert_eq!(got.len() as u64, expected);
    // The other client's messages in their order.
    let others: Vec<&str> = got.iter().copied().filter(|m| m.starts_with('r')).collect();
    let in_order: Vec<String> = (1..=OTHER).map(|n| format!("r{n}")).collect();
    assert_eq!(others, in_order);
    // It went away, came back by itself, and recovered from where it was.
    let states = strings(&t["states"]);
    let lost = states
        .iter()
        .position(|s| *s == "disconnected")
        .context("never disconnected")?;
    assert!(states[lost..].contains(&"connected"), "{states:?}");
    let recoveries = t["recoveries"].as_array().context("recoveries")?;
    assert!(!recoveries.is_empty(), "no resubscribe with since");
    assert!(
        recoveries.iter().all(|r| r["recovered"] == true),
        "{recoveries:?}"
    );
    assert_eq!(t["errors"], json!([]));
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
    Ok(())
}

/// History kept in memory only is gone after a restart: the page's subscription reports
/// `recovered: false` (never hides the gap) and goes on.
#[tokio::test]
async fn the_browser_client_reports_a_lost_history_as_recovered_false() -> Result<()> {
    let mut overrides = vec![("SERVER_SHARDS", "2"), ("HISTORY_SIZE", "100")];
    let server = TestServer::start(&overrides).await?;
    let addr = server.addr.to_string();
    let mut browser = example_page(&server).await?;
    let setup = r#"(async () => {
        const { connect } = await import('/client/wsedge.js');
        const t = window.t = { got: [], recoveries: [] };
        const c = t.client = connect(`ws://${location.host}/ws`, { minDelay: 100, maxDelay: 500, heartbeat: 1000, grace: 2000 });
        const sub = c.subscribe('room', (m) => { t.got.push(m.data); });
        sub.on('recovery', (e) => t.recoveries.push(e.recovered));
        await sub.ready;
        await c.publish('room', 'before');
        return c.state;
    })()"#;
    assert_eq!(browser.eval_await(setup).await?, "connected");
    let read = "JSON.parse(JSON.stringify({got: t.got, recoveries: t.recoveries}))";
    let start = Instant::now();
    while browser.eval(read).await?["got"] != json!(["before"]) {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("'before' did not arrive");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9().await?;
    overrides.push(("LISTEN", &addr));
    let server = TestServer::start(&overrides).await?;
    let start = Instant::now();
    let recoveries = loop {
        let t = browser.eval(read).await?;
        if t["recoveries"] != json!([]) {
            break t["recoveries"].clone();
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no recovery event after the restart: {t}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        recoveries,
        json!([false]),
        "a lost history reported recovered"
    );
    let after = browser
        .eval_await("t.client.publish('room', 'after').then(() => new Promise((r) => { const wait = () => t.got.length >= 2 ? r(t.got) : setTimeout(wait, 10); wait(); }))")
        .await?;
    assert_eq!(after, json!(["before", "after"]));
    drop(server);
    Ok(())
}

/// The conformance list the Rust and Python clients run too (`client_rust.rs`,
/// `clients/python/tests`), here in the page: connect and auth, direct send, subscribe/publish,
/// patterns, lz4, a group (each message to one member), ack/nak/term with redelivery; a token
/// refreshed through `getToken` before it expires; and an lz4 bomb refused.
const CONFORMANCE: &str = r#"(async () => {
    const { connect } = await import('/client/wsedge.js');
    const tokens = TOKENS;
    const url = `ws://${location.host}/ws`;
    const quick = { minDelay: 100, maxDelay: 500, heartbeat: 1000, grace: 2000 };
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const until = async (f, what) => {
        const start = Date.now();
        while (!f()) {
            if (Date.now() - start > 10000) throw new Error('timed out: ' + what);
            await sleep(10);
        }
    };
    const r = {};
    // Auth and a direct send; alice reads with lz4.
    const alice = connect(url, { ...quick, token: tokens.alice, lz4: true });
    const bob = connect(url, { ...quick, token: tokens.bob });
    const direct = [];
    alice.on('message', (m) => direct.push({ user: m.user, from: m.from, data: m.data }));
    const room = [], news = [];
    await alice.subscribe('room', (m) => room.push(m.data)).ready;
    await alice.subscribe('news.>', (m) => news.push([m.channel, m.data])).ready;
    r.protocol = alice._ws.protocol;
    r.delivered = (await bob.send('alice', 'psst')).delivered;
    for (const [c, d] of [['room', 'a'], ['news.eu', 'b'], ['news.eu.fr', 'c'], ['sport', 'd']]) await bob.publish(c, d);
    await bob.publish('room', 'x'.repeat(4000));
    await until(() => room.length >= 2 && news.length >= 2 && direct.length >= 1, 'room, news, direct');
    try { await bob.publish('news.*', 1); r.badChannel = 'accepted'; } catch (e) { r.badChannel = e.code; }
    // A group: each of 30 messages to one of 3 members.
    const seen = [];
    for (let i = 0; i < 3; i++) await connect(url, quick).subscribe('jobs', { group: 'workers' }, (m) => seen.push(m.data)).ready;
    for (let n = 0; n < 30; n++) await bob.publish('jobs', n);
    await until(() => seen.length >= 30, 'the group');
    // ack, nak, term; the nak'd and the ignored come again.
    const got = [];
    await connect(url, quick).subscribe('tasks', { group: 'w', ack: true, autoAck: false }, async (m) => {
        got.push(`${m.data}:${m.redelivered}`);
        if (m.data === 'ack' || m.redelivered > 0) await m.ack();
        else if (m.data === 'nak') await m.nak(0);
        else if (m.data === 'term') await m.term('not for us');
    }).ready;
    for (const n of ['ack', 'nak', 'term', 'ignore']) await bob.publish('tasks', n);
    await until(() => got.length >= 6, 'acks and redeliveries');
    // A bad token: refused (the browser sees no status), retried, never connected.
    const mallory = connect(url, { ...quick, token: 'not.a.token' });
    const refused = [];
    mallory.on('state', (e) => refused.push(e.state));
    await until(() => refused.filter((s) => s === 'disconnected').length >= 2, 'mallory retried');
    mallory.close();
    // A token that expires in 4 s, refreshed through getToken 3 s before: still connected after.
    let calls = 0;
    const states = [];
    const renewed = connect(url, { ...quick, refreshBefore: 3000, getToken: async () => tokens.carol[Math.min(calls++, 1)] });
    renewed.on('state', (e) => states.push(e.state));
    await renewed.subscribe('ready', () => {}).ready;
    await sleep(5500);
    r.refresh = { calls, states, connected: renewed.connected };
    // A hostile lz4 frame claiming 4 GiB in 9 bytes is refused before anything is allocated.
    class Bomb {
        constructor() {
            this.protocol = 'wsedge.v1.lz4';
            setTimeout(() => this.onmessage({ data: new Uint8Array([255, 255, 255, 255, 16, 0, 0, 0, 0]).buffer }));
        }
        send() {}
        close() {}
    }
    const bombed = connect('ws://127.0.0.1:9/ws', { ...quick, lz4: true, WebSocket: Bomb });
    const bombErrors = [];
    bombed.on('error', (e) => bombErrors.push(String(e)));
    await until(() => bombErrors.length > 0, 'the bomb refused');
    bombed.close();
    r.bomb = bombErrors[0];
    // Nothing more arrives anywhere.
    await sleep(300);
    Object.assign(r, { room: room.map((d) => (d.length > 10 ? `big:${d.length}` : d)), news, direct,
        group: seen.slice().sort((a, b) => a - b), acks: got.sort(), refused });
    return JSON.parse(JSON.stringify(r));
})()"#;

#[tokio::test]
async fn the_browser_client_passes_the_conformance_list() -> Result<()> {
    let server = TestServer::start(&[
        ("SERVER_SHARDS", "2"),
        ("AUTH_HS256_SECRET", support::SECRET),
        ("ACK_WAIT_MS", "300"),
        ("ACK_BACKOFF_MS", "[50]"),
    ])
    .await?;
    let mut browser = example_page(&server).await?;
    // Carol's first token expires 4 s from now.
    let now = support::unix_now();
    let carol = |seconds| {
        support::sign(
            &json!({"sub": "carol", "exp": now + seconds}),
            support::SECRET,
        )
    };
    let tokens = json!({
        "alice": support::token("alice", 600),
        "bob": support::token("bob", 600),
        "carol": [carol(4), carol(600)],
    });
    let r = browser
        .eval_await(&CONFORMANCE.replace("TOKENS", &tokens.to_string()))
        .await?;
    assert_eq!(r["protocol"], "wsedge.v1.lz4");
    assert_eq!(r["delivered"], 1);
    assert_eq!(
        r["direct"],
        json!([{"user": "alice", "from": "bob", "data": "psst"}])
    );
    assert_eq!(r["room"], json!(["a", "big:4000"]), "and lz4 decoded");
    assert_eq!(r["news"], json!([["news.eu", "b"], ["news.eu.fr", "c"]]));
    assert_eq!(r["badChannel"], "bad_channel");
    assert!(
        r["bomb"].as_str().is_some_and(|e| e.contains("too_big")),
        "{}",
        r["bomb"]
    );
    assert_eq!(r["group"], json!((0..30).collect::<Vec<_>>()));
    assert_eq!(
        r["acks"],
        json!(["ack:0", "ignore:0", "ignore:1", "nak:0", "nak:1", "term:0"])
    );
    assert!(
        !strings(&r["refused"]).contains(&"connected"),
        "{}",
        r["refused"]
    );
    let refresh = &r["refresh"];
    assert!(
        refresh["calls"].as_u64() >= Some(2),
        "getToken before expiry: {refresh}"
    );
    assert_eq!(refresh["connected"], true, "{refresh}");
    assert!(
        !strings(&refresh["states"]).contains(&"disconnected"),
        "{refresh}"
    );
    Ok(())
}

/// What a hostile or confused client asks of `/client/`: only the three files, only with GET or
/// HEAD; anything else is a JSON 404 or 405 (with `Allow`), never another file.
#[tokio::test]
async fn the_client_files_are_served_and_nothing_else() -> Result<()> {
    let server = TestServer::start(&[]).await?;
    let (status, body) = server.get("/client/wsedge.js").await?;
    assert_eq!(status, 200);
    assert!(body.contains("export function connect"));
    assert_eq!(server.get("/client/example").await?.0, 200);
    assert_eq!(server.get("/client/wsedge.d.ts").await?.0, 200);
    for path in [
        "/client/",
        "/client",
        "/client/../Cargo.toml",
        "/client/wsedge.js/x",
        "/client/%2e%2e/x",
        "/client/WSEDGE.JS",
    ] {
        let (status, body) = server.get(path).await?;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("\"error\":\"not_found\""), "{path}: {body}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let (status, body) = server.http(method, "/client/wsedge.js", &[]).await?;
        assert_eq!(status, 405, "{method}: {body}");
    }
    let request = "POST /client/wsedge.js HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let (_, head) = support::raw_request(&server, request.as_bytes()).await?;
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
    // HEAD: the GET's headers, no body.
    let request = "HEAD /client/wsedge.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (mut stream, head) = support::raw_request(&server, request.as_bytes()).await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length = format!("content-length: {}", body.len());
    assert!(head.to_ascii_lowercase().contains(&length), "{head}");
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await?;
    assert!(rest.is_empty(), "a body after HEAD: {} bytes", rest.len());
    Ok(())
}
