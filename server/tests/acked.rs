//! Acknowledged subscriptions and groups over real sockets, with a real store on disk:
//! redelivery, the hand-over of a departed member's messages, persist publishes, durable
//! groups across a crash, replaying a group's dead letter, and what a hostile client is told.

mod support;

use anyhow::Result;
use serde_json::{json, Value};
use support::{fresh_store_dir, Client, TestServer};

/// Sends `request` (with `ref`) and returns the answer.
async fn ask(client: &mut Client, mut request: Value, reference: &str) -> Result<Value> {
    request["ref"] = json!(reference);
    client.send(request).await?;
    client.recv_json().await
}

/// Like [`ask`], passing over the deliveries that come first (redeliveries keep coming).
async fn ask_past_messages(
    client: &mut Client,
    mut request: Value,
    reference: &str,
) -> Result<Value> {
    request["ref"] = json!(reference);
    client.send(request).await?;
    loop {
        let frame = client.recv_json().await?;
        if frame["op"] != "message" {
            return Ok(frame);
        }
    }
}

fn group(channel: &str, durable: bool) -> Value {
    json!({"op": "subscribe", "channel": channel, "group": "workers", "ack": true, "durable": durable})
}

fn publish(channel: &str, data: Value, persist: bool) -> Value {
    json!({"op": "publish", "channel": channel, "data": data, "persist": persist})
}

#[tokio::test]
async fn an_acked_subscription_redelivers_until_acked() -> Result<()> {
    let config = [
        ("SERVER_SHARDS", "2"),
        ("ACK_WAIT_MS", "200"),
        ("ACK_BACKOFF_MS", "[50]"),
    ];
    let server = TestServer::start(&config).await?;
    let mut worker = Client::connect(&server).await?;
    let sub = json!({"op": "subscribe", "channel": "jobs", "ack": true});
    assert_eq!(
        ask(&mut worker, sub, "s").await?,
        json!({"op": "ok", "ref": "s"})
    );
    let mut producer = Client::connect(&server).await?;
    let ok = ask(&mut producer, publish("jobs", json!("t1"), false), "p").await?;
    assert_eq!(ok["op"], "ok");
    let first = worker.recv_json().await?;
    assert_eq!(
        (&first["ack"], &first["data"]),
        (&json!(true), &json!("t1"))
    );
    assert!(first.get("redelivered").is_none(), "{first}");
    let again = worker.recv_json().await?;
    assert_eq!(
        (&again["id"], &again["redelivered"]),
        (&first["id"], &json!(1))
    );
    let ack = json!({"op": "ack", "id": first["id"]});
    let acked = ask_past_messages(&mut worker, ack.clone(), "a").await?;
    assert_eq!(acked, json!({"op": "ok", "ref": "a"}));
    // Acked: a second ack finds nothing.
    let twice = ask_past_messages(&mut worker, ack, "b").await?;
    assert_eq!(twice["code"], "unknown_message", "{twice}");
    // A plain subscription to the same channel is refused: one kind per channel.
    let plain = json!({"op": "subscribe", "channel": "jobs"});
    let refused = ask_past_messages(&mut worker, plain, "c").await?;
    assert_eq!(refused["code"], "invalid_field", "{refused}");
    Ok(())
}

#[tokio::test]
async fn a_departed_members_message_goes_to_another_member_at_once() -> Result<()> {
    // A long ack wait: only the hand-over can bring the message to the other member in time.
    let config = [("SERVER_SHARDS", "2"), ("ACK_WAIT_MS", "600000")];
    let server = TestServer::start(&config).await?;
    let mut a = Client::connect_on_shard(&server, 0).await?;
    let mut b = Client::connect_on_shard(&server, 1).await?;
    assert_eq!(ask(&mut a, group("tasks", false), "a").await?["op"], "ok");
    assert_eq!(ask(&mut b, group("tasks", false), "b").await?["op"], "ok");
    let mut producer = Client::connect(&server).await?;
    for n in 0..2 {
        let ok = ask(&mut producer, publish("tasks", json!(n), false), "p").await?;
        assert_eq!(ok["op"], "ok");
    }
    // One each: the member with fewer in flight gets the next one.
    let to_a = a.recv_json().await?;
    let to_b = b.recv_json().await?;
    assert_ne!(to_a["data"], to_b["data"]);
    let ack = ask(&mut b, json!({"op": "ack", "id": to_b["id"]}), "k").await?;
    assert_eq!(ack["op"], "ok", "{ack}");
    // `a` goes away without acking: `b` gets its message, marked redelivered.
    a.close().await?;
    let handed = b.recv_json().await?;
    assert_eq!(
        (&handed["id"], &handed["redelivered"]),
        (&to_a["id"], &json!(1))
    );
    let ack = ask(&mut b, json!({"op": "ack", "id": handed["id"]}), "h").await?;
    assert_eq!(ack["op"], "ok", "{ack}");
    Ok(())
}

#[tokio::test]
async fn a_durable_group_keeps_confirmed_messages_across_a_crash() -> Result<()> {
    let dir = fresh_store_dir();
    let config = [
        ("SERVER_SHARDS", "2"),
        ("STORE_PATH", dir.to_str().unwrap()),
    ];
    let server = TestServer::start(&config).await?;
    let mut member = Client::connect(&server).await?;
    assert_eq!(
        ask(&mut member, group("orders", true), "g").await?["op"],
        "ok"
    );
    member.close().await?;
    // No member now: the durable group still takes them, and the `ok` waits for the store.
    let mut producer = Client::connect(&server).await?;
    for n in 0..3 {
        let mut request = publish("orders", json!(n), true);
        request["msg_id"] = json!(format!("o-{n}"));
        let ok = ask(&mut producer, request, "p").await?;
        assert_eq!(ok, json!({"op": "ok", "ref": "p"}));
    }
    server.kill9().await?;

    let server = TestServer::start(&config).await?;
    // A producer that lost an `ok` in the crash resends with the same msg_id: kept once.
    let mut producer = Client::connect(&server).await?;
    let mut resend = publish("orders", json!(2), true);
    resend["msg_id"] = json!("o-2");
    let dup = ask(&mut producer, resend, "r").await?;
    assert_eq!(dup, json!({"op": "ok", "ref": "r", "duplicate": true}));
    // Published after the restart, before any member is back: kept too.
    let ok = ask(&mut producer, publish("orders", json!(3), true), "p").await?;
    assert_eq!(ok["op"], "ok");
    let mut member = Client::connect(&server).await?;
    assert_eq!(
        ask(&mut member, group("orders", false), "g").await?["op"],
        "ok"
    );
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(member.recv_json().await?);
    }
    let data: Vec<&Value> = got.iter().map(|m| &m["data"]).collect();
    assert_eq!(
        data,
        [&json!(0), &json!(1), &json!(2), &json!(3)],
        "all, in order"
    );
    for m in &got {
        let ack = ask(&mut member, json!({"op": "ack", "id": m["id"]}), "a").await?;
        assert_eq!(ack["op"], "ok", "{ack}");
    }
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn a_groups_dead_letter_is_replayed_into_the_group() -> Result<()> {
    let key = "an api key for the tests";
    let config = [
        ("SERVER_SHARDS", "2"),
        ("API_KEYS", "[\"an api key for the tests\"]"),
    ];
    let server = TestServer::start(&config).await?;
    let mut member = Client::connect(&server).await?;
    assert_eq!(
        ask(&mut member, group("mail", true), "g").await?["op"],
        "ok"
    );
    let mut producer = Client::connect(&server).await?;
    let ok = ask(&mut producer, publish("mail", json!("hi"), true), "p").await?;
    assert_eq!(ok["op"], "ok");
    let m = member.recv_json().await?;
    let term = json!({"op": "term", "id": m["id"], "reason": "later"});
    assert_eq!(ask(&mut member, term, "t").await?["op"], "ok");
    let auth = format!("Authorization: Bearer {key}");
    let query = "/api/dlq?destination=group:workers@mail";
    // The dead letter is written by the store thread after the `ok` to `term`: poll for it.
    let deadline = tokio::time::Instant::now() + support::STEP;
    let list = loop {
        let (status, body) = server.http("GET", query, &[&auth]).await?;
        assert_eq!(status, 200, "{body}");
        let list: Value = serde_json::from_str(&body)?;
        if !list["dead_letters"].as_array().unwrap().is_empty() {
            break list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let dead = &list["dead_letters"][0];
    assert_eq!(dead["reason"], "terminated", "{dead}");
    let path = format!("/api/dlq/{}/replay", dead["id"]);
    let (status, body) = server.http("POST", &path, &[&auth]).await?;
    assert_eq!(status, 200, "{body}");
    let again = member.recv_json().await?;
    assert_eq!((&again["id"], &again["data"]), (&m["id"], &json!("hi")));
    Ok(())
}

#[tokio::test]
async fn hostile_acked_requests_get_clear_errors() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut c = Client::connect(&server).await?;
    let cases = [
        (
            json!({"op": "subscribe", "channel": "a", "ack": "yes"}),
            "invalid_field",
        ),
        (
            json!({"op": "subscribe", "channel": "a", "durable": true}),
            "invalid_field",
        ),
        (
            json!({"op": "subscribe", "channel": "a", "ack": true, "durable": true}),
            "invalid_field",
        ),
        (
            json!({"op": "subscribe", "channel": "a", "ack": true, "presence": true}),
            "invalid_field",
        ),
        (
            json!({"op": "publish", "channel": "a", "data": 1, "persist": 1}),
            "invalid_field",
        ),
        (json!({"op": "ack", "id": "not-yours"}), "unknown_message"),
    ];
    for (request, code) in cases {
        let answer = ask(&mut c, request.clone(), "h").await?;
        assert_eq!(answer["code"], code, "{request} → {answer}");
        assert_eq!(answer["ref"], "h");
    }
    // A persist publish with no durable group is confirmed at once.
    let ok = ask(&mut c, publish("nobody", json!(1), true), "p").await?;
    assert_eq!(ok, json!({"op": "ok", "ref": "p"}));

    // Durable groups live until the store is emptied: a client cannot make them without bound.
    let bounded = [("SERVER_SHARDS", "1"), ("GROUPS_MAX_DURABLE", "1")];
    let server = TestServer::start(&bounded).await?;
    let mut c = Client::connect(&server).await?;
    assert_eq!(ask(&mut c, group("first", true), "1").await?["op"], "ok");
    let second = ask(&mut c, group("second", true), "2").await?;
    assert_eq!(second["code"], "too_many_subscriptions", "{second}");
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .contains("groups.max_durable"),
        "{second}"
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_durable_group_keeps_nothing_across_a_restart() -> Result<()> {
    let dir = fresh_store_dir();
    let key = "an api key for the tests";
    let config = [
        ("SERVER_SHARDS", "2"),
        ("STORE_PATH", dir.to_str().unwrap()),
        ("API_KEYS", "[\"an api key for the tests\"]"),
    ];
    let server = TestServer::start(&config).await?;
    let mut member = Client::connect(&server).await?;
    assert_eq!(
        ask(&mut member, group("logs", true), "g").await?["op"],
        "ok"
    );
    member.close().await?;
    let mut producer = Client::connect(&server).await?;
    for n in 0..2 {
        let ok = ask(&mut producer, publish("logs", json!(n), true), "p").await?;
        assert_eq!(ok["op"], "ok");
    }
    let auth = format!("Authorization: Bearer {key}");
    let path = "/api/groups?channel=logs&group=workers";
    assert_eq!(server.http("DELETE", path, &[]).await?.0, 401);
    let (status, body) = server.http("DELETE", path, &[&auth]).await?;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"deleted":"group:workers@logs"}"#)
    );
    let (status, body) = server.http("DELETE", path, &[&auth]).await?;
    assert_eq!(status, 404, "not durable any more: {body}");
    for bad in [
        "channel=logs",
        "channel=a%20b&group=g",
        "channel=logs&group=no@pe",
    ] {
        let (status, body) = server
            .http("DELETE", &format!("/api/groups?{bad}"), &[&auth])
            .await?;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    producer.close().await?;
    server.terminate().await?;

    let server = TestServer::start(&config).await?;
    // Not durable after the restart either: with no member, it keeps nothing published.
    let mut producer = Client::connect(&server).await?;
    let ok = ask(&mut producer, publish("logs", json!("after"), true), "p").await?;
    assert_eq!(ok["op"], "ok");
    let mut member = Client::connect(&server).await?;
    assert_eq!(
        ask(&mut member, group("logs", false), "g").await?["op"],
        "ok"
    );
    let pong = ask(&mut member, json!({"op": "ping"}), "p").await?;
    assert_eq!(
        pong["op"], "pong",
        "the deleted group's messages are gone: {pong}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn a_publish_repeated_with_its_msg_id_is_delivered_once() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut reader = Client::connect_on_shard(&server, 0).await?;
    reader.subscribe("feed").await?;
    let mut producer = Client::connect_on_shard(&server, 1).await?;
    let once = json!({"op": "publish", "channel": "feed", "data": "once", "msg_id": "k1"});
    assert_eq!(
        ask(&mut producer, once.clone(), "1").await?,
        json!({"op": "ok", "ref": "1"})
    );
    let again = ask(&mut producer, once, "2").await?;
    assert_eq!(again, json!({"op": "ok", "ref": "2", "duplicate": true}));
    let end = json!({"op": "publish", "channel": "feed", "data": "end"});
    assert_eq!(ask(&mut producer, end, "3").await?["op"], "ok");
    assert_eq!(reader.recv_json().await?["data"], "once");
    assert_eq!(
        reader.recv_json().await?["data"],
        "end",
        "the repeat went nowhere"
    );
    Ok(())
}
