//! The conformance list, run against the Rust client (`clients/rust`, crate `wsedge-client`)
//! and a real server: connect and auth, subscribe/publish, patterns, a group (each message to
//! exactly one member), direct sends, ack/nak/term with redelivery, and recovery after the
//! server is killed and restarted, with publishes made meanwhile sent once, and a history lost
//! in a restart reported as `recovered: false`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use support::{token, TestServer, SECRET};
use wsedge_client::{
    Client, Event, Group, Message, Options, PublishOptions, SubscribeOptions, Subscription,
};

/// How long any one expected event may take.
const STEP: Duration = Duration::from_secs(10);

fn url(server: &TestServer) -> String {
    server.url("/ws")
}

/// Quick reconnects, for tests.
fn quick() -> Options {
    Options {
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(500),
        heartbeat: Duration::from_secs(1),
        grace: Duration::from_secs(2),
        ..Options::default()
    }
}

/// A client of `server` with `token`, quick to reconnect.
fn connect_with(server: &TestServer, token: String) -> Result<Client> {
    let options = Options {
        token: Some(token),
        ..quick()
    };
    Ok(Client::connect(&url(server), options)?)
}

async fn next(sub: &mut Subscription) -> Result<Message> {
    tokio::time::timeout(STEP, sub.next())
        .await
        .context("no message in time")?
        .context("the subscription ended")
}

/// The next `n` messages' data.
async fn take(sub: &mut Subscription, n: usize) -> Result<Vec<Value>> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(next(sub).await?.data);
    }
    Ok(got)
}

/// Whether `sub` stays quiet for a moment (nothing more is coming).
async fn quiet(sub: &mut Subscription) -> bool {
    tokio::time::timeout(Duration::from_millis(300), sub.next())
        .await
        .is_err()
}

#[tokio::test]
async fn connect_auth_and_direct_send() -> Result<()> {
    let server =
        TestServer::start(&[("SERVER_SHARDS", "2"), ("AUTH_HS256_SECRET", SECRET)]).await?;
    let alice = connect_with(&server, token("alice", 600))?;
    let mut inbox = alice.direct_messages();
    let bob = connect_with(&server, token("bob", 600))?;
    // A subscribe confirms alice is connected before bob sends.
    alice
        .subscribe("ready", SubscribeOptions::default())
        .await?;
    let ok = bob
        .send("alice", json!("psst"), PublishOptions::default())
        .await?;
    assert_eq!(ok["delivered"], 1);
    let m = next(&mut inbox).await?;
    assert_eq!(
        (m.user.as_deref(), m.from.as_deref(), &m.data),
        (Some("alice"), Some("bob"), &json!("psst"))
    );

    // A bad token: refused at the upgrade, retried with backoff, the reason given.
    let mallory = connect_with(&server, "not.a.token".into())?;
    let mut events = mallory.events();
    let reason = tokio::time::timeout(STEP, async {
        loop {
            if let Ok(Event::Disconnected { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await?;
    assert!(reason.contains("401"), "{reason}");
    mallory.close();
    Ok(())
}

#[tokio::test]
async fn subscribe_publish_and_patterns() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    // This one reads with lz4: large messages arrive compressed.
    let lz4 = Options {
        lz4: true,
        ..quick()
    };
    let client = Client::connect(&url(&server), lz4)?;
    let mut room = client
        .subscribe("room", SubscribeOptions::default())
        .await?;
    let mut news = client
        .subscribe("news.>", SubscribeOptions::default())
        .await?;
    let other = Client::connect(&url(&server), quick())?;
    for (channel, data) in [
        ("room", "a"),
        ("news.eu", "b"),
        ("news.eu.fr", "c"),
        ("sport", "d"),
    ] {
        let ok = other
            .publish(channel, json!(data), PublishOptions::default())
            .await?;
        assert_eq!(ok["op"], "ok");
    }
    let big = "x".repeat(4000);
    other
        .publish("room", json!(big), PublishOptions::default())
        .await?;
    assert_eq!(take(&mut room, 2).await?, [json!("a"), json!(big)]);
    let m = next(&mut news).await?;
    assert_eq!(
        (m.channel.as_deref(), m.data),
        (Some("news.eu"), json!("b"))
    );
    assert_eq!(take(&mut news, 1).await?, [json!("c")]);
    assert!(quiet(&mut room).await && quiet(&mut news).await);
    // A bad channel is the server's error, as an Err.
    let refused = other
        .publish("news.*", json!(1), PublishOptions::default())
        .await;
    assert_eq!(refused.unwrap_err().code(), Some("bad_channel"));
    Ok(())
}

#[tokio::test]
async fn a_group_gives_each_message_to_exactly_one_member() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut members = Vec::new();
    for _ in 0..3 {
        let client = Client::connect(&url(&server), quick())?;
        let sub = client.subscribe("jobs", Group("workers")).await?;
        members.push((client, sub));
    }
    let producer = Client::connect(&url(&server), quick())?;
    for n in 0..30 {
        producer
            .publish("jobs", json!(n), PublishOptions::default())
            .await?;
    }
    let mut seen = Vec::new();
    while seen.len() < 30 {
        let mut got_any = false;
        for (_, sub) in &mut members {
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
                seen.push(m.data.as_u64().context("a number")?);
                got_any = true;
            }
        }
        if !got_any && seen.len() < 30 {
            bail!("only {} of 30 arrived: {seen:?}", seen.len());
        }
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!((seen.len(), unique.len()), (30, 30), "{seen:?}");
    for (_, sub) in &mut members {
        assert!(quiet(sub).await);
    }
    Ok(())
}

#[tokio::test]
async fn ack_nak_term_and_redelivery() -> Result<()> {
    let server = TestServer::start(&[
        ("SERVER_SHARDS", "2"),
        ("ACK_WAIT_MS", "300"),
        ("ACK_BACKOFF_MS", "[50]"),
    ])
    .await?;
    let worker = Client::connect(&url(&server), quick())?;
    let mut tasks = worker.subscribe("tasks", Group("w").ack()).await?;
    let producer = Client::connect(&url(&server), quick())?;
    for n in ["ack", "nak", "term", "ignore"] {
        producer
            .publish("tasks", json!(n), PublishOptions::default())
            .await?;
    }
    let mut redelivered = Vec::new();
    for _ in 0..4 {
        let m = next(&mut tasks).await?;
        assert!(m.needs_ack);
        match m.data.as_str() {
            Some("ack") => m.ack().await?,
            Some("nak") => m.nak(Duration::ZERO).await?,
            Some("term") => m.term("not for us").await?,
            _ => {} // left unsettled: redelivered after wait_ms
        }
    }
    for _ in 0..2 {
        let m = next(&mut tasks).await?;
        redelivered.push((m.data.as_str().unwrap_or("").to_string(), m.redelivered));
        m.ack().await?;
    }
    redelivered.sort();
    assert_eq!(
        redelivered,
        [("ignore".to_string(), 1), ("nak".to_string(), 1)]
    );
    assert!(
        quiet(&mut tasks).await,
        "acked and termed messages do not come again"
    );
    // Settling an id that awaits nothing is refused with the server's code.
    let unknown = json!({"op": "ack", "id": "nope"});
    let refused = worker
        .request(unknown.as_object().cloned().unwrap_or_default())
        .await;
    assert_eq!(refused.unwrap_err().code(), Some("unknown_message"));
    Ok(())
}

#[tokio::test]
async fn recovery_after_a_restart_with_the_offline_buffer_sent_once() -> Result<()> {
    let store = support::fresh_store_dir();
    let store_path = store.to_string_lossy().to_string();
    let mut overrides = support::durable_history(&store_path);
    let server = TestServer::start(&overrides).await?;
    let addr = server.addr.to_string();
    let client = Client::connect(&url(&server), quick())?;
    let mut events = client.events();
    let mut room = client
        .subscribe("room", SubscribeOptions::default())
        .await?;
    for n in 1..=50 {
        client
            .publish("room", json!(format!("p{n}")), PublishOptions::default())
            .await?;
    }
    let once = PublishOptions {
        msg_id: Some("once-1".into()),
        ..PublishOptions::default()
    };
    assert_eq!(
        client
            .publish("room", json!("once"), once.clone())
            .await?
            .get("duplicate"),
        None
    );
    server.kill9().await?;
    let mut recovered = None;
    tokio::time::timeout(STEP, async {
        loop {
            if let Ok(Event::Disconnected { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await?;
    // Publishes while the server is down wait in the buffer.
    let buffered: Vec<_> = (51..=100)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .publish("room", json!(format!("p{n}")), PublishOptions::default())
                    .await
            })
        })
        .collect();
    overrides.push(("LISTEN", &addr));
    let server = TestServer::start(&overrides).await?;
    // Another client publishes at once, while this one is (most likely) still away.
    let other = Client::connect(&url(&server), quick())?;
    for n in 1..=20 {
        other
            .publish("room", json!(format!("r{n}")), PublishOptions::default())
            .await?;
    }
    let answers = futures_util::future::try_join_all(buffered);
    for answer in tokio::time::timeout(STEP, answers)
        .await
        .context("the buffered publishes were not answered")??
    {
        answer?;
    }
    // A resend of a publish confirmed before the crash is a duplicate.
    assert_eq!(
        client.publish("room", json!("once"), once).await?["duplicate"],
        true
    );
    let got = take(&mut room, 121).await?;
    assert!(quiet(&mut room).await, "more than expected");
    let got: Vec<&str> = got.iter().filter_map(Value::as_str).collect();
    let unique: BTreeSet<&str> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "duplicates");
    let expected: BTreeSet<String> = (1..=100)
        .map(|n| format!("p{n}"))
        .chain((1..=20).map(|n| format!("r{n}")))
        .chain(["once".to_string()])
        .collect();
    assert_eq!(unique, expected.iter().map(String::as_str).collect());
    while let Ok(event) = events.try_recv() {
        if let Event::Recovery { recovered: r, .. } = event {
            recovered = Some(r);
        }
    }
    assert_eq!(recovered, Some(true));
    drop(server);
    let _ = std::fs::remove_dir_all(&store);
    Ok(())
}

/// History kept in memory only is gone after a restart: the client says so with
/// `recovered: false` and keeps the subscription, never hiding the gap.
#[tokio::test]
async fn a_lost_history_is_reported_as_recovered_false() -> Result<()> {
    let mut overrides = vec![("SERVER_SHARDS", "2"), ("HISTORY_SIZE", "100")];
    let server = TestServer::start(&overrides).await?;
    let addr = server.addr.to_string();
    let client = Client::connect(&url(&server), quick())?;
    let mut events = client.events();
    let mut room = client
        .subscribe("room", SubscribeOptions::default())
        .await?;
    client
        .publish("room", json!("before"), PublishOptions::default())
        .await?;
    assert_eq!(take(&mut room, 1).await?, [json!("before")]);
    server.kill9().await?;
    overrides.push(("LISTEN", &addr));
    let server = TestServer::start(&overrides).await?;
    let recovered = tokio::time::timeout(STEP, async {
        loop {
            if let Ok(Event::Recovery { recovered, .. }) = events.recv().await {
                return recovered;
            }
        }
    })
    .await
    .context("no recovery event")?;
    assert!(
        !recovered,
        "a history lost in the restart was reported recovered"
    );
    // The subscription goes on after the gap.
    client
        .publish("room", json!("after"), PublishOptions::default())
        .await?;
    assert_eq!(take(&mut room, 1).await?, [json!("after")]);
    drop(server);
    Ok(())
}

#[tokio::test]
async fn dropping_the_last_client_closes_its_connection() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let client = Client::connect(&url(&server), quick())?;
    let copy = client.clone();
    client
        .subscribe("room", SubscribeOptions::default())
        .await?;
    assert_eq!(server.health().await?["connections"], 1);
    drop(client);
    drop(copy);
    // The server sees the close; polled, as nothing else tells the test.
    let start = std::time::Instant::now();
    while server.health().await?["connections"] != 0 {
        if start.elapsed() > STEP {
            bail!("the connection outlived its client");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
