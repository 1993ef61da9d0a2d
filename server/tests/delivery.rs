//! Acknowledged direct messages and durable inboxes over real sockets, with a real store on
//! disk: what an offline user gets, what survives a restart or a crash, redelivery, dedup, and
//! what a hostile client is answered.

mod support;

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use support::{fresh_store_dir, Client, TestServer, SECRET};

fn auth() -> Vec<(&'static str, &'static str)> {
    vec![("SERVER_SHARDS", "2"), ("AUTH_HS256_SECRET", SECRET)]
}

async fn user(server: &TestServer, name: &str) -> Result<Client> {
    Client::connect_with_token(server, &support::token(name, 600)).await
}

/// Sends `request` (with `ref`) and returns the answer.
async fn ask(client: &mut Client, mut request: Value, reference: &str) -> Result<Value> {
    request["ref"] = json!(reference);
    client.send(request).await?;
    client.recv_json().await
}

fn persisted(to: &str, data: Value, msg_id: &str) -> Value {
    json!({"op": "send", "user": to, "data": data, "persist": true, "msg_id": msg_id})
}

#[tokio::test]
async fn an_offline_user_gets_its_inbox_on_connect_and_an_ack_removes_it() -> Result<()> {
    let server = TestServer::start(&auth()).await?;
    let mut alice = user(&server, "alice").await?;
    for n in 0..3 {
        let ok = ask(
            &mut alice,
            persisted("bob", json!(n), &format!("m{n}")),
            "p",
        )
        .await?;
        assert_eq!(ok, json!({"op": "ok", "ref": "p"}));
    }
    let mut bob = user(&server, "bob").await?;
    let mut ids = Vec::new();
    for n in 0..3 {
        let m = bob.recv_json().await?;
        assert_eq!(
            (&m["op"], &m["from"], &m["ack"], &m["data"]),
            (&json!("message"), &json!("alice"), &json!(true), &json!(n)),
            "{m}"
        );
        assert!(m.get("redelivered").is_none(), "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let ok = ask(&mut bob, json!({"op": "ack", "id": id}), "a").await?;
        assert_eq!(ok, json!({"op": "ok", "ref": "a"}));
    }
    // Acked: gone, on this connection and on the next.
    let again = ask(&mut bob, json!({"op": "ack", "id": ids[0]}), "b").await?;
    assert_eq!(again["code"], "unknown_message", "{again}");
    bob.close().await?;
    let mut bob = user(&server, "bob").await?;
    let pong = ask(&mut bob, json!({"op": "ping"}), "p").await?;
    assert_eq!(pong["op"], "pong", "nothing left to deliver: {pong}");
    Ok(())
}

#[tokio::test]
async fn a_restart_and_a_crash_keep_the_inbox_and_the_dedup_window() -> Result<()> {
    let dir = fresh_store_dir();
    let path = dir.to_str().unwrap();
    let mut config = auth();
    config.push(("STORE_PATH", path));
    let server = TestServer::start(&config).await?;
    let mut alice = user(&server, "alice").await?;
    let ok = ask(&mut alice, persisted("bob", json!("before"), "k1"), "1").await?;
    assert_eq!(ok["op"], "ok");
    alice.close().await?;
    server.terminate().await?;

    let server = TestServer::start(&config).await?;
    let mut alice = user(&server, "alice").await?;
    let dup = ask(&mut alice, persisted("bob", json!("again"), "k1"), "2").await?;
    assert_eq!(dup, json!({"op": "ok", "ref": "2", "duplicate": true}));
    let ok = ask(&mut alice, persisted("bob", json!("crash"), "k2"), "3").await?;
    assert_eq!(ok["op"], "ok");
    // Confirmed means written and synced: a SIGKILL right after loses nothing.
    server.kill9().await?;

    let server = TestServer::start(&config).await?;
    let mut bob = user(&server, "bob").await?;
    let first = bob.recv_json().await?;
    let second = bob.recv_json().await?;
    assert_eq!(
        (&first["data"], &second["data"]),
        (&json!("before"), &json!("crash"))
    );
    // It may have been delivered before the restart, so it says so.
    assert_eq!(first["redelivered"], 1, "{first}");
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn unacked_messages_come_again_marked_redelivered_then_nak_and_term() -> Result<()> {
    let mut config = auth();
    config.extend([
        ("ACK_WAIT_MS", "300"),
        ("ACK_BACKOFF_MS", "[100]"),
        ("ACK_MAX_DELIVER", "2"),
    ]);
    let server = TestServer::start(&config).await?;
    let mut alice = user(&server, "alice").await?;
    let mut bob = user(&server, "bob").await?;
    let send = json!({"op": "send", "user": "bob", "data": "task", "ack": true});
    assert_eq!(ask(&mut alice, send, "s").await?["op"], "ok");
    let first = bob.recv_json().await?;
    let again = bob.recv_json().await?;
    assert_eq!(
        (&first["id"], &again["redelivered"]),
        (&again["id"], &json!(1)),
        "{again}"
    );
    // After max_deliver (2) deliveries it is dead-lettered: an ack finds nothing. The ack
    // waits well past the second delivery's deadline (300 ms after it): time must pass here.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let late = ask(&mut bob, json!({"op": "ack", "id": first["id"]}), "late").await?;
    assert_eq!(late["code"], "unknown_message", "{late}");

    let send = json!({"op": "send", "user": "bob", "data": "later", "ack": true});
    assert_eq!(ask(&mut alice, send, "s2").await?["op"], "ok");
    let m = bob.recv_json().await?;
    let nak = json!({"op": "nak", "id": m["id"], "delay_ms": 50});
    assert_eq!(ask(&mut bob, nak, "n").await?["op"], "ok");
    let back = bob.recv_json().await?;
    assert_eq!((&back["id"], &back["redelivered"]), (&m["id"], &json!(1)));
    let term = json!({"op": "term", "id": m["id"], "reason": "cannot do it"});
    assert_eq!(ask(&mut bob, term, "t").await?["op"], "ok");
    let after = ask(&mut bob, json!({"op": "ack", "id": m["id"]}), "x").await?;
    assert_eq!(after["code"], "unknown_message");
    Ok(())
}

#[tokio::test]
async fn hostile_settles_and_full_inboxes_get_clear_errors() -> Result<()> {
    let mut config = auth();
    config.push(("INBOX_MAX_MESSAGES", "2"));
    let server = TestServer::start(&config).await?;
    let mut alice = user(&server, "alice").await?;
    for n in 0..2 {
        let ok = ask(
            &mut alice,
            persisted("carol", json!(n), &format!("f{n}")),
            "f",
        )
        .await?;
        assert_eq!(ok["op"], "ok");
    }
    let full = ask(&mut alice, persisted("carol", json!(2), "f2"), "full").await?;
    assert_eq!(full["code"], "inbox_full", "{full}");
    // Nobody can settle what was not delivered to them, anonymous or not.
    let stolen = ask(&mut alice, json!({"op": "ack", "id": "x"}), "s").await?;
    assert_eq!(stolen["code"], "unknown_message");
    let mut anonymous = Client::connect(&server).await?;
    let anon = ask(&mut anonymous, json!({"op": "term", "id": "x"}), "a").await?;
    assert_eq!(anon["code"], "unknown_message");
    let cases = [
        (json!({"op": "ack"}), "missing_field"),
        (json!({"op": "ack", "id": 5}), "invalid_field"),
        (json!({"op": "ack", "id": "x".repeat(129)}), "invalid_field"),
        (
            json!({"op": "nak", "id": "x", "delay_ms": -1}),
            "invalid_field",
        ),
        (
            json!({"op": "nak", "id": "x", "delay_ms": 86_400_001u64}),
            "invalid_field",
        ),
        (
            json!({"op": "term", "id": "x", "reason": "r".repeat(257)}),
            "invalid_field",
        ),
        (
            json!({"op": "send", "user": "b", "data": 1, "persist": "yes"}),
            "invalid_field",
        ),
        (
            json!({"op": "send", "user": "b", "data": 1, "msg_id": ""}),
            "invalid_field",
        ),
        // A publish's msg_id, kept in the store with durable history: the same bounds.
        (
            json!({"op": "publish", "channel": "c", "data": 1, "msg_id": "x".repeat(129)}),
            "invalid_field",
        ),
        (
            json!({"op": "publish", "channel": "c", "data": 1, "msg_id": 7}),
            "invalid_field",
        ),
    ];
    for (request, code) in cases {
        let answer = ask(&mut alice, request.clone(), "h").await?;
        assert_eq!(answer["code"], code, "{request} → {answer}");
        assert_eq!(answer["ref"], "h");
    }
    Ok(())
}

#[tokio::test]
async fn a_damaged_store_stops_the_start_naming_the_record() -> Result<()> {
    let dir = fresh_store_dir();
    {
        let db = fjall::Database::builder(&dir).open()?;
        let inbox = db.keyspace("inbox", fjall::KeyspaceCreateOptions::default)?;
        inbox.insert(
            b"\x00\x03bob\x00\x00\x00\x00\x00\x00\x00\x01",
            b"\x01garbage",
        )?;
        db.persist(fjall::PersistMode::SyncAll)?;
    }
    let path = dir.to_str().unwrap();
    let error = support::start_error(&[("STORE_PATH", path)]).await?;
    assert!(
        error.contains("is damaged") && error.contains("inbox record"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir)?;
    // One server per store: a second one on the same directory is told why it cannot start.
    let server = TestServer::start(&[("STORE_PATH", path)]).await?;
    let error = support::start_error(&[("STORE_PATH", path)]).await?;
    assert!(error.contains("another wsedge is using it"), "{error}");
    drop(server);
    std::fs::write(dir.join("not-a-dir"), b"x")?;
    let file = dir.join("not-a-dir");
    let error = support::start_error(&[("STORE_PATH", file.to_str().unwrap())]).await?;
    assert!(error.contains("cannot open the store"), "{error}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

const API_KEY: &str = "an api key for the tests";

/// `METHOD path` on the API with the test key; (status, JSON body).
async fn api(server: &TestServer, method: &str, path: &str) -> Result<(u16, Value)> {
    let auth = format!("Authorization: Bearer {API_KEY}");
    let (status, body) = server.http(method, path, &[&auth]).await?;
    Ok((status, serde_json::from_str(&body)?))
}

/// Lists the dead letters until there are `n` (dead-lettering happens on the server's clock).
async fn dead_letters(server: &TestServer, query: &str, n: usize) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + support::STEP;
    loop {
        let (status, list) = api(server, "GET", &format!("/api/dlq{query}")).await?;
        assert_eq!(status, 200, "{list}");
        if list["dead_letters"].as_array().unwrap().len() >= n
            || tokio::time::Instant::now() > deadline
        {
            return Ok(list);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dead_letters_survive_a_restart_and_are_listed_replayed_and_deleted_over_http() -> Result<()>
{
    let dir = fresh_store_dir();
    let mut config = auth();
    let keys = format!(r#"["{API_KEY}"]"#);
    config.extend([
        ("STORE_PATH", dir.to_str().unwrap()),
        ("API_KEYS", &keys),
        ("ACK_WAIT_MS", "200"),
        ("ACK_MAX_DELIVER", "1"),
    ]);
    let server = TestServer::start(&config).await?;
    let mut alice = user(&server, "alice").await?;
    let mut bob = user(&server, "bob").await?;
    for (n, id) in ["d1", "d2"].into_iter().enumerate() {
        assert_eq!(
            ask(&mut alice, persisted("bob", json!(n), id), "p").await?["op"],
            "ok"
        );
    }
    let first = bob.recv_json().await?;
    let second = bob.recv_json().await?;
    let term = json!({"op": "term", "id": second["id"], "reason": "bad \"input\""});
    assert_eq!(ask(&mut bob, term, "t").await?["op"], "ok");
    // The first one is not acked: after one delivery (max_deliver 1) and 200 ms, dead.
    let list = dead_letters(&server, "", 2).await?;
    let letters = list["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{list}");
    let reasons: Vec<&str> = letters
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"terminated") && reasons.contains(&"max_deliver"),
        "{list}"
    );
    let terminated = letters
        .iter()
        .find(|d| d["reason"] == "terminated")
        .unwrap();
    assert_eq!(terminated["detail"], "bad \"input\"");
    assert_eq!(terminated["destination"], "user:bob");
    assert_eq!(terminated["message"]["data"], 1);
    assert_eq!(terminated["message_id"], second["id"]);

    // Without the key, or with another: 401.
    let (status, _) = server.http("GET", "/api/dlq", &[]).await?;
    assert_eq!(status, 401);
    let wrong = "Authorization: Bearer an api key for the testz";
    assert_eq!(server.http("GET", "/api/dlq", &[wrong]).await?.0, 401);

    // A restart keeps them.
    alice.close().await?;
    bob.close().await?;
    server.terminate().await?;
    let server = TestServer::start(&config).await?;
    let list = dead_letters(&server, "?destination=user%3Abob&limit=1", 1).await?;
    assert_eq!(list["dead_letters"].as_array().unwrap().len(), 1);
    let next = list["next_after"].as_u64().unwrap();
    let rest = dead_letters(&server, &format!("?after={next}"), 1).await?;
    assert_eq!(rest["dead_letters"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_after"], Value::Null);
    let none = dead_letters(&server, "?destination=user:carol", 0).await?;
    assert_eq!(none["dead_letters"], json!([]));

    // Replay puts the message back in bob's inbox; delete drops the other.
    let max_deliver = letters
        .iter()
        .find(|d| d["reason"] == "max_deliver")
        .unwrap();
    let (replay_id, delete_id) = (
        max_deliver["id"].as_u64().unwrap(),
        terminated["id"].as_u64().unwrap(),
    );
    let (status, body) = api(&server, "POST", &format!("/api/dlq/{replay_id}/replay")).await?;
    assert_eq!(
        (status, &body["replayed"]),
        (200, &json!(replay_id)),
        "{body}"
    );
    let mut bob = user(&server, "bob").await?;
    let again = bob.recv_json().await?;
    assert_eq!((&again["id"], &again["data"]), (&first["id"], &json!(0)));
    assert_eq!(
        ask(&mut bob, json!({"op": "ack", "id": again["id"]}), "a").await?["op"],
        "ok"
    );
    assert_eq!(
        api(&server, "DELETE", &format!("/api/dlq/{delete_id}"))
            .await?
            .0,
        200
    );
    assert_eq!(
        dead_letters(&server, "", 0).await?["dead_letters"],
        json!([])
    );
    for (method, path, status) in [
        ("DELETE", format!("/api/dlq/{delete_id}"), 404),
        ("POST", format!("/api/dlq/{replay_id}/replay"), 404),
        ("POST", "/api/dlq/x/replay".to_string(), 400),
        ("GET", "/api/dlq?limit=0".to_string(), 400),
        ("GET", "/api/dlq?limit=1001".to_string(), 400),
        ("PUT", "/api/dlq".to_string(), 405),
        ("GET", "/api/nothing".to_string(), 404),
    ] {
        let (got, body) = api(&server, method, &path).await?;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn scheduled_sends_arrive_on_time_survive_a_restart_and_can_be_cancelled() -> Result<()> {
    let dir = fresh_store_dir();
    let mut config = auth();
    config.push(("STORE_PATH", dir.to_str().unwrap()));
    let server = TestServer::start(&config).await?;
    let mut alice = user(&server, "alice").await?;
    let mut bob = user(&server, "bob").await?;
    let sent = std::time::Instant::now();
    let later = json!({"op": "send", "user": "bob", "data": "in 300 ms", "delay_ms": 300});
    let ok = ask(&mut alice, later, "s").await?;
    let id = ok["scheduled"].as_str().unwrap().to_string();
    assert!(id.ends_with(":bob"), "{ok}");
    let m = bob.recv_json().await?;
    assert!(
        sent.elapsed() >= Duration::from_millis(290),
        "early: {:?}",
        sent.elapsed()
    );
    assert_eq!(
        (&m["id"], &m["data"], &m["ack"]),
        (&json!(id), &json!("in 300 ms"), &json!(true))
    );
    assert_eq!(
        ask(&mut bob, json!({"op": "ack", "id": id}), "a").await?["op"],
        "ok"
    );

    // Cancel: only the sender, only once.
    let far = json!({"op": "send", "user": "bob", "data": "never", "delay_ms": 600_000});
    let id = ask(&mut alice, far, "f").await?["scheduled"].clone();
    let mut mallory = user(&server, "mallory").await?;
    let theirs = ask(&mut mallory, json!({"op": "cancel", "id": id}), "m").await?;
    assert_eq!(theirs["code"], "unknown_message", "{theirs}");
    let cancel = json!({"op": "cancel", "id": id});
    assert_eq!(
        ask(&mut alice, cancel.clone(), "c").await?,
        json!({"op": "ok", "ref": "c"})
    );
    assert_eq!(
        ask(&mut alice, cancel, "c2").await?["code"],
        "unknown_message"
    );

    let mut anonymous = Client::connect(&server).await?;
    let forbidden = json!({"op": "send", "user": "bob", "data": 1, "delay_ms": 5});
    assert_eq!(
        ask(&mut anonymous, forbidden, "h").await?["code"],
        "forbidden"
    );
    let cases = [
        (
            json!({"op": "send", "user": "bob", "data": 1, "delay_ms": 700_000_000_000u64}),
            "invalid_field",
        ),
        (
            json!({"op": "send", "user": "bob", "data": 1, "deliver_at": "tomorrow"}),
            "invalid_field",
        ),
        (
            json!({"op": "send", "user": "bob", "data": 1, "deliver_at": "2026-12-02T19:30:00Z", "delay_ms": 1}),
            "invalid_field",
        ),
        (json!({"op": "cancel"}), "missing_field"),
    ];
    for (request, code) in cases {
        let answer = ask(&mut alice, request.clone(), "h").await?;
        assert_eq!(answer["code"], code, "{request} → {answer}");
    }

    // Due while the server is down: delivered right after the start.
    let soon = json!({"op": "send", "user": "bob", "data": "while down", "delay_ms": 500});
    assert!(ask(&mut alice, soon, "d").await?["scheduled"].is_string());
    for client in [alice, bob, mallory, anonymous] {
        client.close().await?;
    }
    server.terminate().await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let server = TestServer::start(&config).await?;
    let mut bob = user(&server, "bob").await?;
    let m = bob.recv_json().await?;
    assert_eq!(m["data"], "while down");
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
