//! Fan-out: 1,000 subscribers spread over two shards, two publishers on different shards; every
//! subscriber receives every message exactly once and each publisher's messages in order.

mod support;

use std::time::Duration;

use anyhow::{ensure, Result};
use futures_util::future::try_join_all;
use futures_util::SinkExt;
use serde_json::json;
use support::{Client, TestServer};
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 1000;
const PER_PUBLISHER: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_subscribers_each_get_every_message_once_in_order() -> Result<()> {
    let server = TestServer::start(&[("SHARDS", "2")]).await?;
    let subscribers = try_join_all((0..SUBSCRIBERS).map(|_| async {
        let mut c = Client::connect(&server).await?;
        c.subscribe("fan").await?;
        anyhow::Ok(c)
    }))
    .await?;
    let on_shard_0 = subscribers.iter().filter(|c| c.shard == 0).count();
    assert!(
        on_shard_0 > 0 && on_shard_0 < SUBSCRIBERS,
        "subscribers on both shards ({on_shard_0} on shard 0)"
    );

    let mut publishers = [
        Client::connect_on_shard(&server, 0).await?,
        Client::connect_on_shard(&server, 1).await?,
    ];
    let readers = subscribers.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let mut next = [0u64; 2];
            for _ in 0..2 * PER_PUBLISHER {
                let m = c.recv_json().await?;
                let publisher = m["data"]["p"].as_u64().unwrap() as usize;
                let seq = m["data"]["seq"].as_u64().unwrap();
                ensure!(
                    seq == next[publisher],
                    "publisher {publisher}: got {seq}, expected {}",
                    next[publisher]
                );
                next[publisher] += 1;
            }
            // Nothing extra: the next frame is the pong to this ping.
            c.send(json!({"op": "ping", "ref": "end"})).await?;
            ensure!(
                c.recv_json().await? == json!({"op": "pong", "ref": "end"}),
                "duplicate or stray message"
            );
            anyhow::Ok(())
        })
    });
    let readers: Vec<_> = readers.collect();
    for seq in 0..PER_PUBLISHER {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            publisher
                .send(json!({"op": "publish", "channel": "fan", "data": {"p": p, "seq": seq}}))
                .await?;
        }
    }
    for reader in readers {
        reader.await??;
    }
    Ok(())
}

/// With a long `write_coalesce_us`, a delivery right after another write is held back, and the
/// next urgent frame (a critical message, a reply) takes it along at once.
#[tokio::test]
async fn held_deliveries_leave_with_the_next_urgent_frame() -> Result<()> {
    let server = TestServer::start(&[("WRITE_COALESCE_US", "10000000"), ("SHARDS", "1")]).await?;
    let mut subscriber = Client::connect(&server).await?;
    let mut publisher = Client::connect(&server).await?;
    subscriber.subscribe("held").await?; // its `ok` reply was a write just now
    let publish = |data: u64, priority: &str| json!({"op": "publish", "channel": "held", "data": data, "priority": priority});
    // One shard: a publish is in the subscriber's outbox before the publisher's `ok`.
    publisher.request_ok(publish(1, "normal"), "1").await?;
    let quiet = tokio::time::timeout(Duration::from_millis(300), subscriber.recv_json()).await;
    ensure!(quiet.is_err(), "a normal delivery was not held: {quiet:?}");
    // Both arrive long before the 10 s interval ends: critical first (its lane), then the held one.
    let prompt = Duration::from_secs(5);
    publisher.send(publish(2, "critical")).await?;
    let (first, second) = tokio::time::timeout(prompt, async {
        anyhow::Ok((subscriber.recv_json().await?, subscriber.recv_json().await?))
    })
    .await??;
    assert_eq!((&first["data"], &second["data"]), (&json!(2), &json!(1)));
    publisher.request_ok(publish(3, "low"), "3").await?;
    subscriber.send(json!({"op": "echo", "data": "e"})).await?;
    let (first, second) = tokio::time::timeout(prompt, async {
        anyhow::Ok((subscriber.recv_json().await?, subscriber.recv_json().await?))
    })
    .await??;
    assert_eq!((&first["data"], &second["data"]), (&json!("e"), &json!(3)));
    Ok(())
}

/// A shard busy enough to moderate its wake-ups (thousands of frames per second, deliveries held
/// for a 10 s interval) still reads every frame within milliseconds: an echo is answered and a
/// critical message brings out every held delivery, in order, long before the interval ends.
#[tokio::test]
async fn a_busy_shard_still_reads_and_loses_nothing_while_deliveries_wait() -> Result<()> {
    const WARM: u64 = 20_000;
    const HELD: u64 = 2_000;
    let server = TestServer::start(&[("WRITE_COALESCE_US", "10000000"), ("SHARDS", "1")]).await?;
    let mut subscriber = Client::connect(&server).await?;
    let mut publisher = Client::connect(&server).await?;
    let mut echoer = Client::connect(&server).await?;
    subscriber.subscribe("busy").await?;
    let publish = |channel: &str, data: u64| {
        Message::text(json!({"op": "publish", "channel": channel, "data": data}).to_string())
    };
    // Frames to nobody make the shard busy; then deliveries to the subscriber start a round.
    for i in 0..WARM {
        publisher.ws.feed(publish("idle", i)).await?;
    }
    for i in 0..HELD {
        publisher.ws.feed(publish("busy", i)).await?;
    }
    publisher.ws.flush().await?;
    // Its pong means the shard has read every publish before it.
    publisher.send(json!({"op": "ping", "ref": "sync"})).await?;
    assert_eq!(
        publisher.recv_json().await?,
        json!({"op": "pong", "ref": "sync"})
    );

    let prompt = Duration::from_secs(5);
    echoer.send(json!({"op": "echo", "data": "e"})).await?;
    let echo = tokio::time::timeout(prompt, echoer.recv_json()).await??;
    assert_eq!(echo["data"], "e");
    publisher
        .send(json!({"op": "publish", "channel": "busy", "data": "c", "priority": "critical"}))
        .await?;
    tokio::time::timeout(prompt, async {
        ensure!(subscriber.recv_json().await?["data"] == "c");
        for i in 0..HELD {
            let m = subscriber.recv_json().await?;
            ensure!(m["data"] == i, "expected {i}, got {m}");
        }
        anyhow::Ok(())
    })
    .await??;
    Ok(())
}
