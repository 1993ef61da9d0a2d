//! Topic patterns over real sockets, across shards: `*` one token, `>` the rest, each message
//! once per connection however many of its subscriptions match.

mod support;

use anyhow::Result;
use serde_json::json;
use support::{Client, TestServer};

/// Sends a ping and expects the pong next: nothing else was queued before it.
async fn nothing_more(c: &mut Client) -> Result<()> {
    c.send(json!({"op": "ping", "ref": "end"})).await?;
    assert_eq!(c.recv_json().await?, json!({"op": "pong", "ref": "end"}));
    Ok(())
}

#[tokio::test]
async fn pattern_subscriptions_match_by_token_across_shards_once_per_connection() -> Result<()> {
    let server = TestServer::start(&[("SERVER_SHARDS", "2")]).await?;
    let mut one = Client::connect_on_shard(&server, 0).await?;
    let mut rest = Client::connect_on_shard(&server, 0).await?;
    let mut publisher = Client::connect_on_shard(&server, 1).await?;
    one.subscribe("news.*").await?;
    one.subscribe("news.eu").await?;
    rest.subscribe("news.>").await?;
    for channel in ["news.eu", "news.eu.fr", "news", "sports.eu"] {
        let publish = json!({"op": "publish", "channel": channel, "data": channel});
        publisher.request_ok(publish, "p").await?;
    }
    let m = one.recv_json().await?;
    assert_eq!(
        (m["channel"].as_str(), m["data"].as_str()),
        (Some("news.eu"), Some("news.eu"))
    );
    nothing_more(&mut one).await?;
    for expected in ["news.eu", "news.eu.fr"] {
        assert_eq!(rest.recv_json().await?["channel"], expected);
    }
    nothing_more(&mut rest).await?;
    // Unsubscribing the pattern leaves the channel subscription.
    one.request_ok(json!({"op": "unsubscribe", "channel": "news.*"}), "u")
        .await?;
    publisher
        .request_ok(
            json!({"op": "publish", "channel": "news.us", "data": 1}),
            "p",
        )
        .await?;
    publisher
        .request_ok(
            json!({"op": "publish", "channel": "news.eu", "data": 2}),
            "p",
        )
        .await?;
    assert_eq!(one.recv_json().await?["data"], 2);
    nothing_more(&mut one).await?;
    Ok(())
}

#[tokio::test]
async fn wildcards_are_for_subscribing_only_and_must_be_whole_tokens() -> Result<()> {
    let server = TestServer::start(&[]).await?;
    let mut c = Client::connect(&server).await?;
    for request in [
        json!({"op": "publish", "channel": "news.*", "data": 1}),
        json!({"op": "publish", "channel": ">", "data": 1}),
        json!({"op": "subscribe", "channel": "news*"}),
        json!({"op": "subscribe", "channel": "news.>.eu"}),
    ] {
        c.send(request.clone()).await?;
        let reply = c.recv_json().await?;
        assert_eq!(reply["code"], "bad_channel", "{request} → {reply}");
    }
    nothing_more(&mut c).await?;
    Ok(())
}
