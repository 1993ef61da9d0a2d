//! Scheduled publishes over real sockets with a real store: on time, to every subscriber,
//! due during a crash (published at the start, kept by a durable group), cancelled only by
//! their publisher, and bad requests.

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use support::{fresh_store_dir, Client, TestServer, SECRET};

async fn ask(client: &mut Client, mut request: Value, reference: &str) -> Result<Value> {
    request["ref"] = json!(reference);
    client.send(request).await?;
    client.recv_json().await
}

async fn user(server: &TestServer, name: &str) -> Result<Client> {
    Client::connect_with_token(server, &support::token(name, 600)).await
}

#[tokio::test]
async fn a_scheduled_publish_goes_out_on_time_and_after_a_crash() -> Result<()> {
    let dir = fresh_store_dir();
    let config = [
        ("SERVER_SHARDS", "2"),
        ("AUTH_HS256_SECRET", SECRET),
        ("STORE_PATH", dir.to_str().unwrap()),
    ];
    let server = TestServer::start(&config).await?;
    let mut ann = user(&server, "ann").await?;
    let mut reader = Client::connect(&server).await?;
    reader.subscribe("news").await?;
    let asked = Instant::now();
    let later = json!({"op": "publish", "channel": "news", "data": "at 300 ms", "delay_ms": 300});
    let ok = ask(&mut ann, later, "s").await?;
    let id = ok["scheduled"].as_str().unwrap().to_string();
    assert!(id.ends_with("#news"), "{ok}");
    let m = reader.recv_json().await?;
    assert!(
        asked.elapsed() >= Duration::from_millis(290),
        "early: {:?}",
        asked.elapsed()
    );
    assert_eq!(
        (&m["channel"], &m["data"]),
        (&json!("news"), &json!("at 300 ms"))
    );
    assert_eq!(m["id"], id.split('#').next().unwrap());

    // Only its publisher cancels it, once, before it is due.
    let far = json!({"op": "publish", "channel": "news", "data": "never", "delay_ms": 600_000});
    let id = ask(&mut ann, far, "f").await?["scheduled"].clone();
    let mut bob = user(&server, "bob").await?;
    let theirs = ask(&mut bob, json!({"op": "cancel", "id": id}), "b").await?;
    assert_eq!(theirs["code"], "unknown_message", "{theirs}");
    let cancel = json!({"op": "cancel", "id": id});
    assert_eq!(
        ask(&mut ann, cancel.clone(), "c").await?,
        json!({"op": "ok", "ref": "c"})
    );
    assert_eq!(
        ask(&mut ann, cancel, "c2").await?["code"],
        "unknown_message"
    );

    let mut anonymous = Client::connect(&server).await?;
    let nobody = json!({"op": "publish", "channel": "news", "data": 1, "delay_ms": 5});
    assert_eq!(ask(&mut anonymous, nobody, "a").await?["code"], "forbidden");
    let bad = json!({"op": "publish", "channel": "news", "data": 1, "deliver_at": "soon"});
    assert_eq!(ask(&mut ann, bad, "x").await?["code"], "invalid_field");

    // Due while the server is down: published right after the start, to whoever is there
    // then; a durable group (here) keeps it for its members.
    let group =
        json!({"op": "subscribe", "channel": "news", "group": "g", "ack": true, "durable": true});
    assert_eq!(ask(&mut anonymous, group.clone(), "g").await?["op"], "ok");
    let soon = json!({"op": "publish", "channel": "news", "data": "while down", "delay_ms": 400});
    assert!(ask(&mut ann, soon, "d").await?["scheduled"].is_string());
    server.kill9().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = TestServer::start(&config).await?;
    let mut member = Client::connect(&server).await?;
    assert_eq!(ask(&mut member, group, "g").await?["op"], "ok");
    let m = member.recv_json().await?;
    assert_eq!(m["data"], "while down", "{m}");
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
