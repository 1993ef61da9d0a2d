//! Direct messages over real sockets: `send` reaches every connection of a user on any shard,
//! in the sender's order, and its `ok` says how many connections it reached.

mod support;

use anyhow::Result;
use serde_json::{json, Value};
use support::{Client, TestServer, SECRET};

#[tokio::test]
async fn a_direct_message_reaches_the_users_connections_on_both_shards_in_order() -> Result<()> {
    let server =
        TestServer::start(&[("SERVER_SHARDS", "2"), ("AUTH_HS256_SECRET", SECRET)]).await?;
    let mut alice = [
        Client::user_on_shard(&server, "alice", 0).await?,
        Client::user_on_shard(&server, "alice", 1).await?,
    ];
    let mut bob = Client::user_on_shard(&server, "bob", 1).await?;
    bob.send(
        json!({"op": "send", "user": "alice", "data": {"hi": 1}, "priority": "high", "ref": "s1"}),
    )
    .await?;
    assert_eq!(
        bob.recv_json().await?,
        json!({"op": "ok", "ref": "s1", "delivered": 2})
    );
    for c in &mut alice {
        let m = c.recv_json().await?;
        assert_eq!(
            (&m["op"], &m["user"], &m["from"], &m["priority"], &m["data"]),
            (
                &json!("message"),
                &json!("alice"),
                &json!("bob"),
                &json!("high"),
                &json!({"hi": 1})
            ),
            "{m}"
        );
        assert!(m["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    // Nobody of that name: delivered 0. Anonymous senders are `from: null`.
    bob.send(json!({"op": "send", "user": "nobody", "data": 1, "ref": "s2"}))
        .await?;
    assert_eq!(bob.recv_json().await?["delivered"], 0);
    let mut anonymous = Client::connect_on_shard(&server, 0).await?;
    anonymous
        .send(json!({"op": "send", "user": "alice", "data": "x", "ref": 3}))
        .await?;
    assert_eq!(anonymous.recv_json().await?["delivered"], 2);
    for c in &mut alice {
        assert_eq!(c.recv_json().await?["from"], Value::Null);
    }
    // Per-sender order holds on each recipient connection, local or across shards.
    for n in 0..500 {
        bob.send(json!({"op": "send", "user": "alice", "data": n}))
            .await?;
    }
    for c in &mut alice {
        for n in 0..500 {
            assert_eq!(c.recv_json().await?["data"], n);
        }
    }
    // Once alice's connection on shard 1 has closed, one is left. (Bob is on shard 1 too, so
    // the shard has dropped it before it reads bob's next request.)
    let [_, gone] = alice;
    gone.close().await?;
    bob.send(json!({"op": "send", "user": "alice", "data": "?", "ref": "n"}))
        .await?;
    assert_eq!(bob.recv_json().await?["delivered"], 1);
    Ok(())
}

#[tokio::test]
async fn a_send_outside_the_senders_permissions_is_forbidden() -> Result<()> {
    let server = TestServer::start(&[
        ("AUTH_HS256_SECRET", SECRET),
        ("AUTH_ANONYMOUS_PUBLISH", r#"["user.support"]"#),
    ])
    .await?;
    let mut anonymous = Client::connect(&server).await?;
    anonymous
        .send(json!({"op": "send", "user": "alice", "data": 1, "ref": 1}))
        .await?;
    let reply = anonymous.recv_json().await?;
    assert_eq!(
        (reply["code"].as_str(), &reply["ref"]),
        (Some("forbidden"), &json!(1))
    );
    anonymous
        .send(json!({"op": "send", "user": "support", "data": 1, "ref": 2}))
        .await?;
    assert_eq!(
        anonymous.recv_json().await?,
        json!({"op": "ok", "ref": 2, "delivered": 0})
    );
    Ok(())
}
