//! Presence over real sockets with two shards: who is subscribed, join and leave events.

mod support;

use anyhow::Result;
use serde_json::json;
use support::{Client, TestServer, SECRET};

#[tokio::test]
async fn presence_lists_users_on_both_shards_and_watchers_see_joins_and_leaves() -> Result<()> {
    let server = TestServer::start(&[
        ("SERVER_SHARDS", "2"),
        ("AUTH_HS256_SECRET", SECRET),
        ("PRESENCE_MAX_USERS", "2"),
    ])
    .await?;
    let mut watcher = Client::user_on_shard(&server, "watcher", 0).await?;
    watcher
        .request_ok(
            json!({"op": "subscribe", "channel": "room", "presence": true}),
            "w",
        )
        .await?;
    let me = watcher.connection.clone();
    let join = watcher.recv_json().await?;
    assert_eq!(
        join,
        json!({"op": "join", "channel": "room", "user": "watcher", "connection": me})
    );
    let mut ann = Client::user_on_shard(&server, "ann", 1).await?;
    ann.subscribe("room").await?;
    let mut anonymous = Client::connect_on_shard(&server, 1).await?;
    anonymous.subscribe("room").await?;
    for (user, connection) in [
        (json!("ann"), &ann.connection),
        (json!(null), &anonymous.connection),
    ] {
        let event = watcher.recv_json().await?;
        assert_eq!(
            event,
            json!({"op": "join", "channel": "room", "user": user, "connection": connection})
        );
    }
    for asker in [&mut watcher, &mut anonymous] {
        asker
            .send(json!({"op": "presence", "channel": "room", "ref": 9}))
            .await?;
        assert_eq!(
            asker.recv_json().await?,
            json!({"op": "presence", "ref": 9, "channel": "room", "connections": 3, "users": ["ann", "watcher"]})
        );
    }
    // A third user is beyond presence.max_users = 2.
    let mut bo = Client::user_on_shard(&server, "bo", 0).await?;
    bo.subscribe("room").await?;
    assert_eq!(watcher.recv_json().await?["user"], "bo");
    bo.send(json!({"op": "presence", "channel": "room"}))
        .await?;
    let answer = bo.recv_json().await?;
    assert_eq!(
        (
            answer["connections"].as_u64(),
            answer["truncated"].as_bool()
        ),
        (Some(4), Some(true)),
        "{answer}"
    );
    // Leaving: by unsubscribing, and by disconnecting.
    ann.request_ok(json!({"op": "unsubscribe", "channel": "room"}), "u")
        .await?;
    let leave = watcher.recv_json().await?;
    assert_eq!(
        (leave["op"].as_str(), leave["user"].as_str()),
        (Some("leave"), Some("ann"))
    );
    let gone = anonymous.connection.clone();
    anonymous.close().await?;
    let leave = watcher.recv_json().await?;
    assert_eq!(
        (leave["op"].as_str(), leave["connection"].as_str()),
        (Some("leave"), Some(gone.as_str()))
    );
    watcher
        .send(json!({"op": "presence", "channel": "room"}))
        .await?;
    assert_eq!(
        watcher.recv_json().await?["users"],
        json!(["bo", "watcher"])
    );
    Ok(())
}
