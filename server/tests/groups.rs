//! Queue groups over real sockets with two shards: each message to exactly one member of each
//! group, wherever the members live, and none starved.

mod support;

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use support::{Client, TestServer};

const MESSAGES: u64 = 10_000;

type Tasks = tokio::sync::mpsc::UnboundedSender<(usize, Value)>;

/// Reads member `index`'s tasks into `tx` until the message on channel `stop`.
fn drain(index: usize, mut client: Client, tx: Tasks) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        loop {
            let m = client.recv_json().await?;
            match (m["op"].as_str(), m["channel"].as_str()) {
                (Some("message"), Some("stop")) => return Ok(()),
                (Some("message"), _) => tx.send((index, m["data"].clone()))?,
                _ => anyhow::bail!("unexpected {m}"),
            }
        }
    })
}

async fn run_group(balance: &str) -> Result<Vec<usize>> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut members = Vec::new();
    for n in 0..10 {
        let mut c = Client::connect_on_shard(&server, n % 2).await?;
        let join =
            json!({"op": "subscribe", "channel": "tasks", "group": "workers", "balance": balance});
        c.request_ok(join, "join").await?;
        c.subscribe("stop").await?;
        members.push(c);
    }
    let mut everyone = Client::connect(&server).await?;
    everyone.subscribe("tasks").await?;
    let mut publisher = Client::connect_on_shard(&server, 1).await?;
    for n in 0..MESSAGES {
        publisher
            .send(json!({"op": "publish", "channel": "tasks", "data": n}))
            .await?;
    }
    publisher
        .request_ok(json!({"op": "ping"}), "done")
        .await
        .ok();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let readers: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, c)| drain(i, c, tx.clone()))
        .collect();
    drop(tx);
    let mut got: HashMap<u64, usize> = HashMap::new();
    let mut shares = vec![0; 10];
    while got.len() < MESSAGES as usize {
        let (member, data) = tokio::time::timeout(support::STEP, rx.recv())
            .await
            .with_context(|| format!("only {} of {MESSAGES} tasks arrived", got.len()))?
            .context("readers ended")?;
        let n = data.as_u64().context("data")?;
        assert!(got.insert(n, member).is_none(), "task {n} delivered twice");
        shares[member] += 1;
    }
    // Then the stop message ends every reader; no task may come twice meanwhile.
    publisher
        .request_ok(
            json!({"op": "publish", "channel": "stop", "data": 0}),
            "stop",
        )
        .await?;
    for reader in readers {
        reader.await??;
    }
    if let Some((member, data)) = rx.recv().await {
        anyhow::bail!("member {member} got {data} more than once");
    }
    for n in 0..MESSAGES {
        let m = everyone.recv_json().await?;
        assert_eq!(
            m["data"], n,
            "a plain subscriber gets every message, in order"
        );
    }
    Ok(shares)
}

#[tokio::test]
async fn round_robin_gives_each_of_ten_members_on_two_shards_a_tenth_exactly_once() -> Result<()> {
    let shares = run_group("round_robin").await?;
    assert!(shares.iter().all(|&n| n == 1000), "{shares:?}");
    Ok(())
}

#[tokio::test]
async fn least_loaded_delivers_each_message_once_and_starves_no_member() -> Result<()> {
    let shares = run_group("least_loaded").await?;
    eprintln!("least_loaded shares of 10,000 over 10 members: {shares:?}");
    assert!(shares.iter().all(|&n| n > 0), "{shares:?}");
    Ok(())
}

#[tokio::test]
async fn a_member_that_leaves_stops_receiving_and_unsubscribe_needs_the_group() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut a = Client::connect_on_shard(&server, 0).await?;
    let mut b = Client::connect_on_shard(&server, 1).await?;
    for c in [&mut a, &mut b] {
        let join =
            json!({"op": "subscribe", "channel": "jobs.*", "group": "g", "balance": "round_robin"});
        c.request_ok(join, "join").await?;
    }
    // Leaving needs the group's name; the plain channel was never subscribed.
    a.send(json!({"op": "unsubscribe", "channel": "jobs.*", "ref": 1}))
        .await?;
    assert_eq!(a.recv_json().await?["code"], "not_subscribed");
    a.request_ok(
        json!({"op": "unsubscribe", "channel": "jobs.*", "group": "g"}),
        "left",
    )
    .await?;
    for n in 0..20 {
        a.request_ok(
            json!({"op": "publish", "channel": "jobs.x", "data": n}),
            "p",
        )
        .await?;
    }
    for n in 0..20 {
        assert_eq!(b.recv_json().await?["data"], n);
    }
    a.send(json!({"op": "ping", "ref": "end"})).await?;
    assert_eq!(a.recv_json().await?, json!({"op": "pong", "ref": "end"}));
    Ok(())
}
