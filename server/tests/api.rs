//! The HTTP server API over real sockets: what it publishes, sends and broadcasts reaches
//! WebSocket clients as theirs do; presence, history and disconnect; every bad request gets a
//! JSON error with the right status.

mod support;

use anyhow::Result;
use serde_json::{json, Value};
use support::{Client, TestServer, SECRET};

const KEY: &str = "Authorization: Bearer an api key of 16+ bytes";

async fn server(extra: &[(&str, &str)]) -> Result<TestServer> {
    let mut config = vec![
        ("SERVER_SHARDS", "2"),
        ("API_KEYS", r#"["an api key of 16+ bytes"]"#),
        ("AUTH_HS256_SECRET", SECRET),
    ];
    config.extend_from_slice(extra);
    TestServer::start(&config).await
}

/// `method path` with the key and `body`; (status, JSON body).
async fn call(server: &TestServer, method: &str, path: &str, body: &str) -> Result<(u16, Value)> {
    let (status, text) = server.http_body(method, path, &[KEY], body).await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

#[tokio::test]
async fn publish_send_and_broadcast_reach_websocket_clients() -> Result<()> {
    let server = server(&[]).await?;
    let mut readers = Vec::new();
    for shard in 0..2 {
        let mut reader = support::Client::user_on_shard(&server, "bob", shard).await?;
        reader.subscribe("news").await?;
        reader.subscribe("sport").await?;
        readers.push(reader);
    }
    let body = r#"{"channel":"news","data":{"headline":"hi"},"priority":"high","msg_id":"n1"}"#;
    assert_eq!(
        call(&server, "POST", "/api/publish", body).await?,
        (200, json!({"ok": true}))
    );
    for reader in &mut readers {
        let m = reader.recv_json().await?;
        assert_eq!(
            (&m["op"], &m["channel"]),
            (&json!("message"), &json!("news")),
            "{m}"
        );
        assert_eq!(
            (&m["data"], &m["priority"]),
            (&json!({"headline": "hi"}), &json!("high"))
        );
    }
    // The same msg_id again is a duplicate and goes nowhere.
    let (status, answer) = call(&server, "POST", "/api/publish", body).await?;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(true)),
        "{answer}"
    );
    let body = r#"{"user":"bob","data":"psst"}"#;
    let (status, answer) = call(&server, "POST", "/api/send", body).await?;
    assert_eq!((status, &answer["delivered"]), (200, &json!(2)), "{answer}");
    for reader in &mut readers {
        let m = reader.recv_json().await?;
        assert_eq!(
            (&m["user"], &m["data"]),
            (&json!("bob"), &json!("psst")),
            "{m}"
        );
    }
    let body = r#"{"channels":["news","sport"],"data":7}"#;
    let (status, answer) = call(&server, "POST", "/api/broadcast", body).await?;
    assert_eq!((status, &answer["failed"]), (200, &json!(0)), "{answer}");
    for reader in &mut readers {
        for channel in ["news", "sport"] {
            let m = reader.recv_json().await?;
            assert_eq!(
                (&m["channel"], &m["data"]),
                (&json!(channel), &json!(7)),
                "{m}"
            );
        }
    }
    // One bad channel: the others go, and the answer says which failed.
    let body = r#"{"channels":["news","bad channel"],"data":8}"#;
    let (status, answer) = call(&server, "POST", "/api/broadcast", body).await?;
    assert_eq!((status, &answer["failed"]), (207, &json!(1)), "{answer}");
    assert_eq!(answer["results"][1]["error"], "bad_channel", "{answer}");
    for reader in &mut readers {
        assert_eq!(reader.recv_json().await?["data"], 8);
    }
    // A scheduled publish needs no user through the API.
    let body = r#"{"channel":"news","data":"later","delay_ms":200}"#;
    let (status, answer) = call(&server, "POST", "/api/publish", body).await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["scheduled"].as_str().is_some(), "{answer}");
    assert_eq!(readers[1].recv_json().await?["data"], "later");
    Ok(())
}

#[tokio::test]
async fn presence_history_and_disconnect() -> Result<()> {
    let server = server(&[("HISTORY_SIZE", "10")]).await?;
    let mut ann = Vec::new();
    for shard in 0..2 {
        let mut c = Client::user_on_shard(&server, "ann", shard).await?;
        let subscribe = json!({"op": "subscribe", "channel": "room", "presence": true, "ref": 1});
        c.send(subscribe).await?;
        assert_eq!(c.recv_json().await?["op"], "ok");
        ann.push(c);
    }
    let (status, answer) = call(&server, "GET", "/api/presence/room", "").await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["users"], &answer["connections"]),
        (&json!(["ann"]), &json!(2))
    );
    for i in 0..3 {
        let body = format!(r#"{{"channel":"room","data":{i}}}"#);
        assert_eq!(call(&server, "POST", "/api/publish", &body).await?.0, 200);
    }
    let (status, all) = call(&server, "GET", "/api/history/room?limit=2", "").await?;
    assert_eq!(status, 200, "{all}");
    let data: Vec<&Value> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"])
        .collect();
    assert_eq!(data, [&json!(1), &json!(2)]);
    let epoch = all["epoch"].as_str().unwrap();
    let since = format!("/api/history/room?epoch={epoch}&offset=2");
    let (status, after) = call(&server, "GET", &since, "").await?;
    assert_eq!(
        (status, after["messages"].as_array().unwrap().len()),
        (200, 1),
        "{after}"
    );
    assert_eq!(after["recovered"], true);
    let body = r#"{"user":"ann","code":4003,"reason":"banned"}"#;
    let (status, answer) = call(&server, "POST", "/api/disconnect", body).await?;
    assert_eq!((status, &answer["closed"]), (200, &json!(2)), "{answer}");
    for c in &mut ann {
        loop {
            match c.recv().await? {
                tokio_tungstenite::tungstenite::Message::Close(Some(frame)) => {
                    assert_eq!((u16::from(frame.code), &*frame.reason), (4003, "banned"));
                    break;
                }
                _ => continue,
            }
        }
    }
    drop(ann);
    // Counted when each connection's task ends, just after its close.
    let counted = "wsedge_closes_total{code=\"other\",reason=\"disconnected\"} 2";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !server.get("/metrics").await?.1.contains(counted) {
        assert!(std::time::Instant::now() < deadline, "no {counted}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_a_json_error_and_the_right_status() -> Result<()> {
    let server = server(&[
        ("HISTORY_SIZE", "0"),
        ("CONNECTION_MAX_MESSAGE_SIZE", "1024"),
    ])
    .await?;
    let post = |path: &'static str, body: &'static str| {
        let server = &server;
        async move { call(server, "POST", path, body).await }
    };
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        ("/api/publish", "{nope", 400, "invalid_json"),
        ("/api/publish", "[1]", 400, "not_an_object"),
        ("/api/publish", r#"{"data":1}"#, 400, "missing_field"),
        (
            "/api/publish",
            r#"{"channel":"a b","data":1}"#,
            400,
            "bad_channel",
        ),
        (
            "/api/publish",
            r#"{"channel":"c","data":1,"priority":"top"}"#,
            400,
            "invalid_field",
        ),
        (
            "/api/publish",
            r#"{"channel":"c","data":1,"deliver_at":"x"}"#,
            400,
            "invalid_field",
        ),
        ("/api/send", r#"{"data":1}"#, 400, "missing_field"),
        ("/api/broadcast", r#"{"data":1}"#, 400, "missing_field"),
        (
            "/api/broadcast",
            r#"{"channels":[],"data":1}"#,
            400,
            "invalid_field",
        ),
        ("/api/disconnect", r#"{}"#, 400, "missing_field"),
        (
            "/api/disconnect",
            r#"{"user":"u","code":1006}"#,
            400,
            "invalid_field",
        ),
        ("/api/nothing", "{}", 404, "not_found"),
    ];
    for (path, body, status, code) in cases {
        let (got, answer) = post(path, body).await?;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{path} {body}"
        );
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let big = format!(r#"{{"channel":"c","data":"{}"}}"#, "x".repeat(2000));
    let (status, answer) = call(&server, "POST", "/api/publish", &big).await?;
    assert_eq!((status, answer["error"].as_str()), (413, Some("too_large")));
    // Deep nesting is refused before it is parsed (a parser's recursion would overflow).
    let deep = format!(
        "{{\"channel\":\"c\",\"data\":{}{}}}",
        "[".repeat(300),
        "]".repeat(300)
    );
    let (status, answer) = call(&server, "POST", "/api/publish", &deep).await?;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_json")),
        "{answer}"
    );
    assert_eq!(server.get("/health").await?.0, 200, "still up");
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let body = json!({"channels": many, "data": 1}).to_string();
    assert_eq!(call(&server, "POST", "/api/broadcast", &body).await?.0, 400);
    let (status, answer) = call(&server, "GET", "/api/history/room", "").await?;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("history_off"))
    );
    assert_eq!(call(&server, "GET", "/api/publish", "").await?.0, 405);
    assert_eq!(call(&server, "PUT", "/api/presence/room", "").await?.0, 405);
    let request = format!("DELETE /api/publish HTTP/1.1\r\nHost: x\r\n{KEY}\r\n\r\n");
    let (_, head) = support::raw_request(&server, request.as_bytes()).await?;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nallow: post\r\n"),
        "{head}"
    );
    // No key, or a wrong one.
    let (status, _) = server.http_body("POST", "/api/publish", &[], "{}").await?;
    assert_eq!(status, 401);
    let wrong = ["Authorization: Bearer not the api key at all"];
    assert_eq!(
        server.http_body("POST", "/api/send", &wrong, "{}").await?.0,
        401
    );
    Ok(())
}
