//! Channel history over real sockets, two shards: offsets and epochs on messages, the position
//! in a subscribe's `ok`, recovery with `since` (all or nothing, each message once), the
//! `history` op, a memory-only restart, a durable one across a crash, and bad requests.

mod support;

use anyhow::Result;
use serde_json::{json, Value};
use support::{Client, TestServer};

const HISTORY: [(&str, &str); 2] = [("SERVER_SHARDS", "2"), ("HISTORY_SIZE", "100")];

async fn ask(client: &mut Client, mut request: Value, reference: &str) -> Result<Value> {
    request["ref"] = json!(reference);
    client.send(request).await?;
    client.recv_json().await
}

/// Reads `n` frames; returns the answer to `reference` and the offsets of the messages, in the
/// order they came (an `ok` goes in the critical lane, so it may come before them).
async fn answer_and_offsets(
    client: &mut Client,
    reference: &str,
    n: usize,
) -> Result<(Value, Vec<u64>)> {
    let (mut answer, mut offsets) = (Value::Null, Vec::new());
    for _ in 0..n {
        let frame = client.recv_json().await?;
        if frame["ref"] == reference {
            answer = frame;
        } else {
            assert_eq!(frame["op"], "message", "{frame}");
            offsets.push(frame["offset"].as_u64().unwrap());
        }
    }
    Ok((answer, offsets))
}

async fn publish(client: &mut Client, n: u64) -> Result<()> {
    let ok = ask(
        client,
        json!({"op": "publish", "channel": "room", "data": n}),
        "p",
    )
    .await?;
    assert_eq!(ok, json!({"op": "ok", "ref": "p"}));
    Ok(())
}

#[tokio::test]
async fn subscribers_get_offsets_and_recover_what_they_missed_exactly_once() -> Result<()> {
    let server = TestServer::start(&HISTORY).await?;
    let mut first = Client::connect_on_shard(&server, 0).await?;
    let ok = ask(
        &mut first,
        json!({"op": "subscribe", "channel": "room"}),
        "s",
    )
    .await?;
    let epoch = ok["epoch"].as_str().unwrap().to_string();
    assert_eq!(
        (ok["offset"].clone(), ok.get("recovered")),
        (json!(0), None),
        "{ok}"
    );
    let mut publisher = Client::connect_on_shard(&server, 1).await?;
    for n in 1..=5 {
        publish(&mut publisher, n).await?;
    }
    for n in 1..=5u64 {
        let m = first.recv_json().await?;
        assert_eq!(
            (&m["offset"], &m["epoch"], &m["data"]),
            (&json!(n), &json!(epoch), &json!(n))
        );
    }

    // A client that saw up to 2 recovers 3, 4, 5, then gets 6 live, each once.
    let mut late = Client::connect_on_shard(&server, 1).await?;
    late.send(json!({"op": "subscribe", "channel": "room", "ref": "r", "since": {"epoch": epoch, "offset": 2}}))
        .await?;
    let (ok, offsets) = answer_and_offsets(&mut late, "r", 4).await?;
    assert_eq!(
        ok,
        json!({"op": "ok", "ref": "r", "epoch": epoch, "offset": 5, "recovered": true})
    );
    assert_eq!(offsets, [3, 4, 5]);
    publish(&mut publisher, 6).await?;
    assert_eq!(late.recv_json().await?["offset"], 6);
    assert_eq!(first.recv_json().await?["offset"], 6);

    // Another epoch: nothing replayed, said so.
    let mut wrong = Client::connect_on_shard(&server, 0).await?;
    let request =
        json!({"op": "subscribe", "channel": "room", "since": {"epoch": "x", "offset": 1}});
    let ok = ask(&mut wrong, request, "w").await?;
    assert_eq!(
        (&ok["recovered"], &ok["offset"]),
        (&json!(false), &json!(6)),
        "{ok}"
    );
    publish(&mut publisher, 7).await?;
    assert_eq!(wrong.recv_json().await?["offset"], 7, "live only");

    // history: the last two, or those after an offset.
    let read = ask(
        &mut publisher,
        json!({"op": "history", "channel": "room", "limit": 2}),
        "h",
    )
    .await?;
    let offsets: Vec<&Value> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["offset"])
        .collect();
    assert_eq!(
        (offsets, &read["offset"], &read["epoch"]),
        (vec![&json!(6), &json!(7)], &json!(7), &json!(epoch))
    );
    let since = json!({"op": "history", "channel": "room", "since": {"epoch": epoch, "offset": 4}});
    let read = ask(&mut publisher, since, "h2").await?;
    assert_eq!(
        (
            read["messages"].as_array().unwrap().len(),
            &read["recovered"]
        ),
        (3, &json!(true))
    );

    // Bad requests.
    for (request, code) in [
        (
            json!({"op": "subscribe", "channel": "room", "since": {"epoch": 1, "offset": 1}}),
            "invalid_field",
        ),
        (
            json!({"op": "subscribe", "channel": "room", "since": {"epoch": "e"}}),
            "invalid_field",
        ),
        (
            json!({"op": "subscribe", "channel": "room.*", "since": {"epoch": "e", "offset": 1}}),
            "invalid_field",
        ),
        (
            json!({"op": "subscribe", "channel": "room", "group": "g", "since": {"epoch": "e", "offset": 1}}),
            "invalid_field",
        ),
        (
            json!({"op": "history", "channel": "room", "limit": 0}),
            "invalid_field",
        ),
        (
            json!({"op": "history", "channel": "room", "limit": 1001}),
            "invalid_field",
        ),
        (json!({"op": "history", "channel": "room.>"}), "bad_channel"),
        (json!({"op": "history"}), "missing_field"),
    ] {
        let answer = ask(&mut publisher, request.clone(), "bad").await?;
        assert_eq!(answer["code"], code, "{request} → {answer}");
    }
    Ok(())
}

#[tokio::test]
async fn a_memory_only_restart_is_a_new_epoch_and_recovery_says_false() -> Result<()> {
    let server = TestServer::start(&HISTORY).await?;
    let mut client = Client::connect(&server).await?;
    let ok = ask(
        &mut client,
        json!({"op": "subscribe", "channel": "room"}),
        "s",
    )
    .await?;
    publish(&mut client, 1).await?;
    assert_eq!(client.recv_json().await?["offset"], 1);
    let epoch = ok["epoch"].clone();
    client.close().await?;
    let store = server.store.clone();
    server.terminate().await?;
    let mut config = HISTORY.to_vec();
    let path = store.to_str().unwrap().to_string();
    config.push(("STORE_PATH", &path));
    let server = TestServer::start(&config).await?;
    let mut client = Client::connect(&server).await?;
    let request =
        json!({"op": "subscribe", "channel": "room", "since": {"epoch": epoch, "offset": 1}});
    let ok = ask(&mut client, request, "s").await?;
    assert_eq!(
        (&ok["recovered"], &ok["offset"]),
        (&json!(false), &json!(0)),
        "{ok}"
    );
    assert_ne!(ok["epoch"], epoch);
    drop(server);
    let _ = std::fs::remove_dir_all(store);
    Ok(())
}

#[tokio::test]
async fn durable_history_survives_a_crash_with_its_epoch() -> Result<()> {
    let dir = support::fresh_store_dir();
    let path = dir.to_str().unwrap().to_string();
    let mut config = HISTORY.to_vec();
    config.extend([("HISTORY_DURABLE", "true"), ("STORE_PATH", &path)]);
    let server = TestServer::start(&config).await?;
    let mut client = Client::connect(&server).await?;
    let ok = ask(
        &mut client,
        json!({"op": "subscribe", "channel": "room"}),
        "s",
    )
    .await?;
    let epoch = ok["epoch"].clone();
    // A publisher of its own: its `ok` and the message race (different lanes).
    let mut publisher = Client::connect(&server).await?;
    for n in 1..=3 {
        // Confirmed means synced: the SIGKILL below loses none of them.
        publish(&mut publisher, n).await?;
        assert_eq!(client.recv_json().await?["offset"], n);
    }
    server.kill9().await?;

    let server = TestServer::start(&config).await?;
    let mut client = Client::connect(&server).await?;
    let request =
        json!({"op": "subscribe", "channel": "room", "since": {"epoch": epoch, "offset": 1}});
    client
        .send({
            let mut r = request;
            r["ref"] = json!("s");
            r
        })
        .await?;
    let (ok, offsets) = answer_and_offsets(&mut client, "s", 3).await?;
    assert_eq!(
        (&ok["recovered"], &ok["epoch"], &ok["offset"]),
        (&json!(true), &epoch, &json!(3)),
        "{ok}"
    );
    assert_eq!(offsets, [2, 3]);
    // The run goes on where it stopped.
    let mut publisher = Client::connect(&server).await?;
    publish(&mut publisher, 4).await?;
    let m = client.recv_json().await?;
    assert_eq!((&m["offset"], &m["epoch"]), (&json!(4), &epoch));
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn without_history_since_and_history_are_refused_and_messages_carry_no_offset() -> Result<()>
{
    let server = TestServer::start(&[]).await?;
    let mut client = Client::connect(&server).await?;
    let request =
        json!({"op": "subscribe", "channel": "room", "since": {"epoch": "e", "offset": 1}});
    assert_eq!(ask(&mut client, request, "s").await?["code"], "history_off");
    let read = ask(
        &mut client,
        json!({"op": "history", "channel": "room"}),
        "h",
    )
    .await?;
    assert_eq!(read["code"], "history_off");
    let ok = ask(
        &mut client,
        json!({"op": "subscribe", "channel": "room"}),
        "p",
    )
    .await?;
    assert_eq!(ok, json!({"op": "ok", "ref": "p"}));
    publish(&mut client, 1).await?;
    assert!(client.recv_json().await?.get("offset").is_none());
    Ok(())
}
