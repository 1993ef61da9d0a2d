//! Durable channel history with time passed in: a message is kept, published and confirmed
//! only once the store has it; a failed write starts a new epoch; a restart takes back the
//! epoch written last; what is dropped is deleted from the store.

use std::sync::Arc;

use super::*;
use crate::protocol::Priority;

const TTL: u64 = 10_000;

fn broker(size: usize) -> Broker {
    one_shard(HistoryConfig {
        size,
        ttl_ms: TTL,
        max_bytes: 1 << 20,
        durable: true,
    })
}

/// The broker of a one-shard server with `history`.
pub(super) fn one_shard(history: HistoryConfig) -> Broker {
    Broker::new(BrokerConfig {
        shard: 0,
        shards: 1,
        presence_max_users: 10,
        max_subscriptions: 4,
        max_batch_bytes: 1000,
        delivery: DeliveryConfig::default(),
        history,
        boot: 0xab,
    })
}

/// What the effects did.
#[derive(Debug, Default)]
struct Done {
    answers: Vec<(u64, Answer)>,
    broadcast: usize,
    /// Store tokens asked for, and the records.
    tokens: Vec<u64>,
    records: Vec<Record>,
}

fn done(out: &mut Effects) -> Done {
    let mut done = Done::default();
    out.drain(|action| match action {
        Action::Answer { origin, answer } => done.answers.push((origin.token, answer)),
        Action::Broadcast { .. } => done.broadcast += 1,
        Action::Persist { token, records } => {
            done.tokens.extend(token);
            done.records.extend(records);
        }
        _ => {}
    });
    done
}

fn publish(b: &mut Broker, n: u64, now: u64) -> Done {
    publish_with(b, n, None, now)
}

fn publish_with(b: &mut Broker, n: u64, msg_id: Option<&str>, now: u64) -> Done {
    let mut out = Effects::default();
    let message = Sequence {
        channel: "room".into(),
        id: format!("m{n}").into(),
        priority: Priority::Normal,
        data: bytes::Bytes::from(format!("{n}")),
        msg_id: msg_id.map(Into::into),
        origin: Origin { shard: 0, token: n },
        born_us: 0,
    };
    b.publish_sequenced(message, now, &mut out);
    done(&mut out)
}

fn stored(b: &mut Broker, token: u64, ok: bool, now: u64) -> Done {
    let mut out = Effects::default();
    b.stored(token, ok, now, &mut out);
    done(&mut out)
}

/// A `history` read of `room` since (epoch, offset): (epoch, offset, recovered, messages).
fn read(
    b: &mut Broker,
    since: Option<(&str, u64)>,
    now: u64,
) -> (Arc<str>, u64, Option<bool>, usize) {
    let mut out = Effects::default();
    let query = HistoryQuery {
        channel: "room".into(),
        since: since.map(|(epoch, offset)| Position {
            epoch: epoch.into(),
            offset,
        }),
        limit: 100,
        subscribe: None,
        origin: Origin {
            shard: 0,
            token: 99,
        },
    };
    b.receive(ShardMessage::HistoryQuery(Box::new(query)), now, &mut out);
    match done(&mut out).answers.pop().map(|a| a.1) {
        Some(Answer::History { read, .. }) => {
            (read.epoch, read.offset, read.recovered, read.messages.len())
        }
        other => panic!("{other:?}"),
    }
}

fn deleted(d: &Done) -> Vec<u64> {
    let offsets = d.records.iter().filter_map(|r| match r {
        Record::HistoryDelete { offset, .. } => Some(*offset),
        _ => None,
    });
    offsets.collect()
}

#[test]
fn a_message_is_kept_published_and_confirmed_only_once_stored() {
    let mut b = broker(10);
    let d = publish(&mut b, 1, 100);
    assert_eq!((d.broadcast, d.answers.len(), d.tokens.len()), (0, 0, 1));
    assert!(matches!(d.records[0], Record::HistoryPut { offset: 1, .. }));
    assert_eq!(read(&mut b, None, 100).1, 0, "readers do not see it yet");
    let d = stored(&mut b, d.tokens[0], true, 101);
    assert_eq!((d.broadcast, d.answers), (1, vec![(1, Answer::Ok)]));
    let (_, offset, _, messages) = read(&mut b, None, 101);
    assert_eq!((offset, messages), (1, 1));
}

#[test]
fn a_failed_write_is_refused_and_starts_a_new_epoch() {
    let mut b = broker(10);
    let first = publish(&mut b, 1, 100);
    stored(&mut b, first.tokens[0], true, 100);
    let (epoch, offset, _, _) = read(&mut b, None, 100);
    assert_eq!(offset, 1);
    let second = publish(&mut b, 2, 101);
    let d = stored(&mut b, second.tokens[0], false, 101);
    assert_eq!(d.broadcast, 0, "never published");
    assert_eq!(d.answers, [(2, Answer::Refused(Refusal::StoreFailed))]);
    assert_eq!(deleted(&d), [1], "the broken run goes from the store");
    let (fresh, offset, recovered, _) = read(&mut b, Some((&epoch, 1)), 101);
    assert_ne!(fresh, epoch);
    assert_eq!((offset, recovered), (0, Some(false)));
}

#[test]
fn trimmed_and_expired_messages_are_deleted_from_the_store() {
    let mut b = broker(2);
    let mut dropped = Vec::new();
    for n in 1..=3 {
        let d = publish(&mut b, n, 100 + n);
        dropped.extend(deleted(&stored(&mut b, d.tokens[0], true, 100 + n)));
    }
    assert_eq!(dropped, [1], "size 2: the first goes");
    let mut out = Effects::default();
    b.handle_timeout(100 + TTL + 10, &mut out);
    assert_eq!(deleted(&done(&mut out)), [2, 3], "expired after ttl");
}

#[test]
fn a_restart_takes_back_the_epoch_written_last_without_what_expired() {
    let mut b = broker(10);
    let message = |offset: u64, epoch: &str, at: u64| {
        let m = StoredMessage {
            id: format!("m{offset}").into(),
            payload: bytes::Bytes::from(format!(r#"{{"op":"message","offset":{offset}}}"#)),
            priority: Priority::Normal,
            created_ms: at,
            expires_ms: at + TTL,
            not_before_ms: 0,
            from: None,
        };
        (Arc::from("room"), offset, Arc::from(epoch), m)
    };
    let now = 20_000;
    let restored = vec![
        message(1, "new", 1),
        message(1, "old", 5),
        message(2, "new", now - 10),
        message(2, "old", 6),
        message(3, "new", now - 5),
    ];
    b.restore_history(restored, now);
    assert_eq!(
        read(&mut b, Some(("new", 1)), now),
        ("new".into(), 3, Some(true), 2)
    );
    assert_eq!(read(&mut b, Some(("old", 2)), now).2, Some(false));
    // Recovering from before the expired message is no longer complete.
    assert_eq!(read(&mut b, Some(("new", 0)), now).2, Some(false));
    let mut out = Effects::default();
    b.handle_timeout(now, &mut out);
    let mut gone = deleted(&done(&mut out));
    gone.sort_unstable();
    assert_eq!(gone, [1, 1, 2], "the old epoch's and the expired one");
    // The next message follows the restored run.
    let d = publish(&mut b, 4, now + 1);
    assert!(matches!(d.records[0], Record::HistoryPut { offset: 4, .. }));
}

#[test]
fn a_publish_repeated_after_a_restart_is_still_a_duplicate() {
    let window = DeliveryConfig::default().dedup_window_ms;
    let mut b = broker(10);
    let first = publish_with(&mut b, 1, Some("p-1"), 1_000);
    // The msg_id is written with the message, in the same batch.
    let key: Box<str> = "channel:room\0p-1".into();
    let dedup = Record::Dedup {
        key: key.clone(),
        expires_ms: 1_000 + window,
    };
    assert!(first.records.contains(&dedup), "{:?}", first.records);
    assert_eq!(
        publish(&mut b, 9, 1_000)
            .records
            .iter()
            .filter(|r| matches!(r, Record::Dedup { .. }))
            .count(),
        0
    );

    // A restart reads the key back: the publisher's resend is answered `duplicate`, stores
    // nothing and publishes nothing; another msg_id is published.
    let mut b = broker(10);
    b.restore_dedup(key.clone(), 1_000 + window, 2_000);
    let again = publish_with(&mut b, 2, Some("p-1"), 2_000);
    assert_eq!(again.answers, vec![(2, Answer::Duplicate)]);
    assert!(again.records.is_empty() && again.broadcast == 0);
    assert!(!publish_with(&mut b, 3, Some("p-2"), 2_000)
        .records
        .is_empty());

    // A key that expired while the server was down is not restored.
    let mut b = broker(10);
    b.restore_dedup(key, 1_000 + window, 1_000 + window);
    assert!(!publish_with(&mut b, 4, Some("p-1"), 1_000 + window)
        .records
        .is_empty());
}
