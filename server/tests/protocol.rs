//! Protocol v1 over real sockets against the real binary.

mod support;

use anyhow::Result;
use serde_json::json;
use support::{Client, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn publish_crosses_shards() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut subscriber = Client::connect_on_shard(&server, 0).await?;
    let mut publisher = Client::connect_on_shard(&server, 1).await?;
    subscriber.subscribe("news").await?;
    publisher
        .request_ok(
            json!({"op": "publish", "channel": "news", "data": {"n": 1}, "priority": "high"}),
            "p1",
        )
        .await?;
    let m = subscriber.recv_json().await?;
    assert_eq!(m["op"], "message");
    assert_eq!(m["channel"], "news");
    assert_eq!(m["priority"], "high");
    assert_eq!(m["data"], json!({"n": 1}));
    assert!(m["id"].as_str().is_some_and(|id| !id.is_empty()));
    // The publisher, not subscribed, gets nothing more; once subscribed it receives its own message.
    publisher.subscribe("news").await?;
    publisher
        .send(json!({"op": "publish", "channel": "news", "data": 2}))
        .await?;
    assert_eq!(publisher.recv_json().await?["data"], 2);
    assert_eq!(subscriber.recv_json().await?["data"], 2);
    // After unsubscribing, nothing arrives: the next thing the subscriber sees is its pong.
    subscriber
        .request_ok(json!({"op": "unsubscribe", "channel": "news"}), "u")
        .await?;
    publisher
        .request_ok(json!({"op": "publish", "channel": "news", "data": 3}), "p3")
        .await?;
    assert_eq!(publisher.recv_json().await?["data"], 3);
    subscriber
        .send(json!({"op": "ping", "ref": "after"}))
        .await?;
    assert_eq!(
        subscriber.recv_json().await?,
        json!({"op": "pong", "ref": "after"})
    );
    Ok(())
}

#[tokio::test]
async fn ping_and_echo_answer_with_the_same_ref() -> Result<()> {
    let server = TestServer::start(&[]).await?;
    let mut c = Client::connect(&server).await?;
    c.send(json!({"op": "ping", "ref": {"k": [1, 2]}})).await?;
    assert_eq!(
        c.recv_json().await?,
        json!({"op": "pong", "ref": {"k": [1, 2]}})
    );
    c.send(json!({"op": "echo", "data": {"s": "é\"\n", "n": 1.5}, "ref": 7}))
        .await?;
    assert_eq!(
        c.recv_json().await?,
        json!({"op": "echo", "data": {"s": "é\"\n", "n": 1.5}, "ref": 7})
    );
    Ok(())
}

#[tokio::test]
async fn every_bad_request_gets_an_error_and_the_connection_stays_open() -> Result<()> {
    let server = TestServer::start(&[("CONNECTION_MAX_SUBSCRIPTIONS", "1")]).await?;
    let mut c = Client::connect(&server).await?;
    let cases = [
        (Message::text("{not json"), None, "invalid_json"),
        (Message::text("[1]"), None, "not_an_object"),
        (
            Message::text(r#"{"op":"fly","ref":1}"#),
            Some(json!(1)),
            "unknown_op",
        ),
        (
            Message::text(r#"{"ref":"m"}"#),
            Some(json!("m")),
            "missing_field",
        ),
        (
            Message::text(r#"{"op":"publish","channel":"c","ref":2}"#),
            Some(json!(2)),
            "missing_field",
        ),
        (
            Message::text(r#"{"op":"subscribe","channel":"no spaces","ref":3}"#),
            Some(json!(3)),
            "bad_channel",
        ),
        (
            Message::text(r#"{"op":"publish","channel":"c","data":1,"priority":"urgent"}"#),
            None,
            "invalid_field",
        ),
        (
            Message::text(r#"{"op":"unsubscribe","channel":"never"}"#),
            None,
            "not_subscribed",
        ),
        (
            Message::binary(b"{}".to_vec()),
            None,
            "binary_not_supported",
        ),
    ];
    for (request, reference, code) in cases {
        c.send_raw(request.clone()).await?;
        let reply = c.recv_json().await?;
        assert_eq!(reply["op"], "error", "{request:?} -> {reply}");
        assert_eq!(reply["code"], code, "{request:?} -> {reply}");
        assert_eq!(
            reply.get("ref"),
            reference.as_ref(),
            "{request:?} -> {reply}"
        );
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    c.subscribe("one").await?;
    c.send(json!({"op": "subscribe", "channel": "two"})).await?;
    assert_eq!(c.recv_json().await?["code"], "too_many_subscriptions");
    c.send(json!({"op": "ping", "ref": "still-open"})).await?;
    assert_eq!(
        c.recv_json().await?,
        json!({"op": "pong", "ref": "still-open"})
    );
    Ok(())
}

#[tokio::test]
async fn lz4_clients_get_large_messages_compressed() -> Result<()> {
    let server = TestServer::start(&[("PROTOCOL_LZ4_THRESHOLD", "1024")]).await?;
    let mut lz4 = Client::connect_with(&server, Some("wsedge.v1.lz4")).await?;
    let mut plain = Client::connect_with(&server, Some("wsedge.v1")).await?;
    lz4.subscribe("big").await?;
    plain.subscribe("big").await?;
    let big = "abc".repeat(2000);
    plain
        .request_ok(json!({"op": "publish", "channel": "big", "data": big}), "p")
        .await?;
    let Message::Binary(block) = lz4.recv().await? else {
        panic!("expected a binary lz4 frame")
    };
    assert!(
        block.len() < big.len() / 4,
        "compressed to {} bytes",
        block.len()
    );
    let json: serde_json::Value =
        serde_json::from_slice(&lz4_flex::decompress_size_prepended(&block)?)?;
    assert_eq!(json["data"], big.as_str());
    assert_eq!(
        plain.recv_json().await?["data"],
        big.as_str(),
        "plain clients get text"
    );
    // Below the threshold, lz4 clients get text too.
    plain
        .send(json!({"op": "publish", "channel": "big", "data": "small"}))
        .await?;
    assert_eq!(lz4.recv_json().await?["data"], "small");
    Ok(())
}

#[tokio::test]
async fn http_routes_and_handshake_errors() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let health = server.health().await?;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["shards"], 2);
    let (status, body) = server.get("/nope").await?;
    assert_eq!(status, 404);
    assert!(body.contains("not_found"), "{body}");
    assert_eq!(server.get("/ws").await?.0, 426);
    let mut request = server.url("/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "chat".parse()?);
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected 400 for an unknown subprotocol, got {other:?}"),
    }
    let _c = Client::connect(&server).await?;
    assert_eq!(server.health().await?["connections"], 1);
    Ok(())
}
