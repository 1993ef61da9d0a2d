//! Fan-out: 1,000 subscribers spread over two shards, two publishers on different shards; every
//! subscriber receives every message exactly once and each publisher's messages in order.

mod support;

use std::ops::Range;
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
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
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
    let server = TestServer::start(&[
        ("CONNECTION_WRITE_COALESCE_US", "10000000"),
        ("SERVER_SHARDS", "1"),
    ])
    .await?;
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
    // Batches large enough that the held deliveries do not go out early on their own.
    let server = TestServer::start(&[
        ("CONNECTION_WRITE_COALESCE_US", "10000000"),
        ("SERVER_SHARDS", "1"),
        ("CONNECTION_WRITE_BATCH_BYTES", "1048576"),
    ])
    .await?;
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

/// A one-shard server with a 10 s coalescing interval (plus `overrides`), clients subscribed
/// to "ch" (one per subprotocol in `members`), a publisher and a probe. The shard is made busy
/// and message 0 published: the round that begins finds it busy, so later messages are batched.
struct Batching {
    server: TestServer,
    members: Vec<Client>,
    publisher: Client,
    probe: Client,
}

async fn batching(overrides: &[(&str, &str)], members: &[Option<&str>]) -> Result<Batching> {
    let mut all = vec![
        ("CONNECTION_WRITE_COALESCE_US", "10000000"),
        ("SERVER_SHARDS", "1"),
    ];
    all.extend_from_slice(overrides);
    let server = TestServer::start(&all).await?;
    let mut subscribed = Vec::new();
    for subprotocol in members {
        let mut member = Client::connect_with(&server, *subprotocol).await?;
        member.subscribe("ch").await?;
        subscribed.push(member);
    }
    let mut publisher = Client::connect(&server).await?;
    let mut probe = Client::connect(&server).await?;
    // Frames to a channel nobody reads: enough for the shard to count as busy.
    for i in 0..20_000 {
        let publish = json!({"op": "publish", "channel": "idle", "data": i});
        publisher
            .ws
            .feed(Message::text(publish.to_string()))
            .await?;
    }
    publish_range(&mut publisher, &mut probe, 0..1).await?;
    Ok(Batching {
        server,
        members: subscribed,
        publisher,
        probe,
    })
}

/// Publishes to "ch" a message whose data's `i` is each of `range` (every tenth over 2 kB, so
/// lz4-compressed; the others about 100 bytes), then waits for a pong on `probe`: the shard has
/// read them all, and what they woke has run.
async fn publish_range(
    publisher: &mut Client,
    probe: &mut Client,
    range: Range<u64>,
) -> Result<()> {
    for i in range {
        let pad = if i % 10 == 0 {
            "x".repeat(2000)
        } else {
            String::new()
        };
        let publish = json!({"op": "publish", "channel": "ch", "data": {"i": i, "pad": pad}});
        publisher
            .ws
            .feed(Message::text(publish.to_string()))
            .await?;
    }
    ping(publisher).await?;
    ping(probe).await
}

/// A ping answered: the shard has read what `client` sent before it.
async fn ping(client: &mut Client) -> Result<()> {
    client.send(json!({"op": "ping", "ref": "sync"})).await?;
    ensure!(client.recv_json().await? == json!({"op": "pong", "ref": "sync"}));
    Ok(())
}

/// The next delivery's JSON, from a text frame or (`wsedge.v1.lz4`) a compressed binary one.
async fn next_delivery(client: &mut Client) -> Result<serde_json::Value> {
    Ok(match client.recv().await? {
        Message::Text(text) => serde_json::from_str(&text)?,
        Message::Binary(block) => {
            serde_json::from_slice(&lz4_flex::decompress_size_prepended(&block)?)?
        }
        other => anyhow::bail!("expected a delivery, got {other:?}"),
    })
}

/// Expects deliveries `range` (the `i` of their data), in order.
async fn expect_range(client: &mut Client, range: Range<u64>) -> Result<()> {
    for i in range {
        let m = next_delivery(client).await?;
        ensure!(m["data"]["i"] == i, "expected {i}, got {m}");
    }
    Ok(())
}

/// On a busy shard a channel's messages wait in its batch for the release (10 s here), yet each
/// reaches exactly the subscribers the channel had when it was published, and membership changes
/// do not send the batch out for the others: one who joins gets only later messages, one who
/// leaves gets its waiting ones at once. A critical message takes the batch along, and lz4
/// clients get their compressed frames from it too.
#[tokio::test]
async fn channel_batches_reach_exactly_the_members_of_their_time() -> Result<()> {
    let lz4 = [("PROTOCOL_LZ4_THRESHOLD", "1024")];
    let mut b = batching(&lz4, &[None, Some("wsedge.v1.lz4"), None]).await?;
    publish_range(&mut b.publisher, &mut b.probe, 1..100).await?;
    b.probe.subscribe("ch").await?;
    let mut leaver = b.members.pop().unwrap();
    let unsubscribe = json!({"op": "unsubscribe", "channel": "ch"});
    leaver.request_ok(unsubscribe, "unsub").await?;
    let prompt = Duration::from_secs(5);
    tokio::time::timeout(prompt, expect_range(&mut leaver, 0..100)).await??;
    publish_range(&mut b.publisher, &mut b.probe, 100..150).await?;
    let critical = json!({"op": "publish", "channel": "ch", "data": "c", "priority": "critical"});
    b.publisher.send(critical).await?;
    let members = b.members.iter_mut().map(|m| (m, 0));
    for (member, first) in members.chain([(&mut b.probe, 100)]) {
        tokio::time::timeout(prompt, async {
            let c = next_delivery(member).await?;
            ensure!(c["data"] == "c", "expected the critical one first, got {c}");
            expect_range(member, first..150).await
        })
        .await??;
    }
    Ok(())
}

/// Shutting down sends the waiting batches before the 1001 close: nothing published is lost.
#[tokio::test]
async fn shutdown_sends_waiting_batches_first() -> Result<()> {
    let mut b = batching(&[], &[None]).await?;
    publish_range(&mut b.publisher, &mut b.probe, 1..100).await?;
    let exit = tokio::spawn(b.server.terminate());
    expect_range(&mut b.members[0], 0..100).await?;
    let (code, _) = b.members[0].expect_close().await?;
    assert_eq!(code, 1001);
    drop((b.members, b.publisher, b.probe));
    assert!(exit.await??.success());
    Ok(())
}

/// A batch that reaches `write_batch_bytes` goes out at once instead of waiting for the release
/// (10 s here): a flooded channel holds no more than that per shard.
#[tokio::test]
async fn a_full_batch_goes_out_without_waiting_for_the_release() -> Result<()> {
    let mut b = batching(&[("CONNECTION_WRITE_BATCH_BYTES", "8192")], &[None]).await?;
    // The batch passes 8 kB with message 30 (not before 20), and goes out.
    publish_range(&mut b.publisher, &mut b.probe, 1..100).await?;
    let prompt = Duration::from_secs(5);
    tokio::time::timeout(prompt, expect_range(&mut b.members[0], 0..20)).await??;
    Ok(())
}
