//! Acknowledged direct messages and inboxes, with time passed in: what each connection is
//! sent, what the store is asked to keep, and what the sender is answered.

use std::sync::Arc;

use super::*;
use crate::auth::Permissions;
use crate::protocol::frame::{self, OpCode};
use crate::protocol::Priority;

const WAIT: u64 = 30_000;

fn broker(config: DeliveryConfig) -> Broker {
    Broker::new(BrokerConfig {
        shard: 0,
        shards: 1,
        presence_max_users: 10,
        max_subscriptions: 4,
        max_batch_bytes: 1000,
        delivery: config,
        history: Default::default(),
        boot: 0,
    })
}

fn delivery() -> DeliveryConfig {
    DeliveryConfig {
        wait_ms: WAIT,
        backoff_ms: vec![1_000, 5_000].into(),
        max_deliver: 3,
        max_pending: 2,
        inbox_ttl_ms: 1_000_000,
        inbox_max_messages: 3,
        inbox_max_bytes: 1 << 20,
        dedup_window_ms: 120_000,
        dedup_max_entries: 100,
        lz4_threshold: usize::MAX,
        max_durable_groups: 10,
    }
}

fn user_peer(user: &str) -> Peer {
    Peer {
        lz4: false,
        user: Some(user.into()),
        permissions: Arc::new(Permissions::all()),
    }
}

/// A message for `bob` with id `id`, answered to token `token` of shard 0.
fn put(id: &str, persist: bool, msg_id: Option<&str>, token: u64) -> InboxMessage {
    let text = format!(r#"{{"op":"message","user":"bob","id":"{id}","ack":true,"data":1}}"#);
    InboxMessage {
        user: "bob".into(),
        id: id.into(),
        frame: frame::encode(OpCode::Text, text.as_bytes()),
        priority: Priority::Normal,
        persist,
        msg_id: msg_id.map(Into::into),
        origin: Some(Origin { shard: 0, token }),
        not_before: 0,
        from: Some("ann".into()),
    }
}

/// A persisted message for `bob` due at `at`.
fn scheduled(id: &str, at: u64, token: u64) -> InboxMessage {
    InboxMessage {
        not_before: at,
        ..put(id, true, None, token)
    }
}

/// Confirms every write in `d` to the broker; returns what that did.
fn confirm(b: &mut Broker, d: &Done, now: u64) -> Done {
    let mut out = Effects::default();
    for (token, _) in &d.persisted {
        if let Some(token) = token {
            b.stored(*token, true, now, &mut out);
        }
    }
    done(&mut out)
}

/// What the effects did.
#[derive(Debug, Default)]
struct Done {
    /// (connection, message id, redelivered count)
    delivered: Vec<(ConnId, String, u32)>,
    answers: Vec<(u64, Answer)>,
    persisted: Vec<(Option<u64>, Vec<Record>)>,
}

fn done(out: &mut Effects) -> Done {
    let mut done = Done::default();
    out.drain(|action| match action {
        Action::Deliver { message, to } => {
            let text = std::str::from_utf8(frame::payload_of(&message.frame)).unwrap();
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            let id = json["id"].as_str().unwrap().to_string();
            let again = json["redelivered"].as_u64().unwrap_or(0) as u32;
            done.delivered
                .extend(to.iter().map(|&c| (c, id.clone(), again)));
        }
        Action::Answer { origin, answer } => done.answers.push((origin.token, answer)),
        Action::Persist { token, records } => done.persisted.push((token, records)),
        _ => {}
    });
    done
}

fn ids(done: &Done) -> Vec<(&str, u32)> {
    done.delivered
        .iter()
        .map(|(_, id, k)| (id.as_str(), *k))
        .collect()
}

fn online(b: &mut Broker, n: u64, now: u64) -> (ConnId, Done) {
    let mut out = Effects::default();
    let id = ConnId::new(0, n);
    b.connect(id, user_peer("bob"));
    b.announce(id, now, &mut out);
    (id, done(&mut out))
}

fn settle(b: &mut Broker, conn: ConnId, id: &str, how: Settle, now: u64) -> Done {
    let mut out = Effects::default();
    let origin = Origin {
        shard: 0,
        token: 99,
    };
    b.settle(conn, id, how, origin, now, &mut out);
    done(&mut out)
}

fn timeout(b: &mut Broker, now: u64) -> Done {
    let mut out = Effects::default();
    b.handle_timeout(now, &mut out);
    done(&mut out)
}

#[test]
fn a_persisted_message_is_confirmed_only_after_the_store_and_then_delivered() {
    let mut b = broker(delivery());
    let (conn, _) = online(&mut b, 1, 0);
    let mut out = Effects::default();
    b.send_to_inbox(put("m1", true, Some("k1"), 7), 10, &mut out);
    let d = done(&mut out);
    assert!(d.answers.is_empty() && d.delivered.is_empty(), "{d:?}");
    let (token, records) = &d.persisted[0];
    assert!(matches!(records[0], Record::InboxPut { seq: 1, .. }));
    assert!(matches!(records[1], Record::Dedup { .. }));
    b.stored(token.unwrap(), true, 20, &mut out);
    let d = done(&mut out);
    assert_eq!(d.answers, vec![(7, Answer::Ok)]);
    assert_eq!(d.delivered, vec![(conn, "m1".into(), 0)]);
    // Acked: the store deletes it and a second ack finds nothing.
    let d = settle(&mut b, conn, "m1", Settle::Ack, 30);
    assert_eq!(d.answers, vec![(99, Answer::Ok)]);
    assert!(matches!(
        d.persisted[0].1[0],
        Record::InboxDelete { seq: 1, .. }
    ));
    let d = settle(&mut b, conn, "m1", Settle::Ack, 31);
    assert!(matches!(
        d.answers[0].1,
        Answer::Refused(Refusal::UnknownMessage(_))
    ));
    assert_eq!(b.poll_timeout(), None, "no timer left once acked");
}

#[test]
fn an_offline_user_gets_its_inbox_when_a_connection_opens() {
    let mut b = broker(delivery());
    let mut out = Effects::default();
    b.send_to_inbox(put("m1", false, None, 1), 0, &mut out);
    let d = done(&mut out);
    assert_eq!(d.answers, vec![(1, Answer::Ok)]);
    assert!(d.delivered.is_empty() && d.persisted.is_empty());
    // Long past the ack wait: nothing was delivered, so no attempt was spent.
    assert!(timeout(&mut b, 10 * WAIT).delivered.is_empty());
    let (_, d) = online(&mut b, 1, 10 * WAIT);
    assert_eq!(ids(&d), vec![("m1", 0)]);
}

#[test]
fn unacked_messages_are_redelivered_after_the_wait_and_each_backoff_step_then_dead_lettered() {
    let mut b = broker(delivery());
    let (conn, _) = online(&mut b, 1, 0);
    let mut out = Effects::default();
    b.send_to_inbox(put("m1", true, None, 1), 0, &mut out);
    let token = done(&mut out).persisted[0].0.unwrap();
    b.stored(token, true, 0, &mut out);
    assert_eq!(ids(&done(&mut out)), vec![("m1", 0)]);
    assert_eq!(b.counters().inbox_messages, 1);
    assert!(timeout(&mut b, WAIT - 1).delivered.is_empty());
    assert!(timeout(&mut b, WAIT).delivered.is_empty(), "backoff first");
    assert_eq!(b.poll_timeout(), Some(WAIT + 1_000));
    assert_eq!(ids(&timeout(&mut b, WAIT + 1_000)), vec![("m1", 1)]);
    let second = 2 * WAIT + 1_000;
    assert!(timeout(&mut b, second).delivered.is_empty());
    assert_eq!(b.poll_timeout(), Some(second + 5_000), "second step");
    assert_eq!(ids(&timeout(&mut b, second + 5_000)), vec![("m1", 2)]);
    // The third delivery was the last (max_deliver = 3).
    let d = timeout(&mut b, second + 5_000 + WAIT);
    assert!(d.delivered.is_empty());
    let records = &d.persisted[0].1;
    assert!(matches!(records[0], Record::InboxDelete { seq: 1, .. }));
    match &records[1] {
        Record::DeadLetter(dead) => {
            assert_eq!((dead.reason, dead.attempts), (DeadReason::MaxDeliver, 3));
            assert_eq!(&*dead.destination, "user:bob");
        }
        other => panic!("{other:?}"),
    }
    let counted = b.counters();
    assert_eq!(counted.redeliveries, 2);
    assert_eq!(counted.dead_letters[DeadReason::MaxDeliver as usize], 1);
    assert_eq!((counted.inbox_messages, counted.inbox_bytes), (0, 0));
    assert!(matches!(
        settle(&mut b, conn, "m1", Settle::Ack, second + 6_000 + WAIT).answers[0].1,
        Answer::Refused(_)
    ));
}

#[test]
fn nak_redelivers_after_its_delay_and_term_dead_letters() {
    let mut b = broker(delivery());
    let (conn, _) = online(&mut b, 1, 0);
    let mut out = Effects::default();
    b.send_to_inbox(put("m1", false, None, 1), 0, &mut out);
    b.send_to_inbox(put("m2", false, None, 2), 0, &mut out);
    assert_eq!(ids(&done(&mut out)), vec![("m1", 0), ("m2", 0)]);
    let d = settle(&mut b, conn, "m1", Settle::Nak { delay_ms: 500 }, 100);
    assert!(d.delivered.is_empty());
    assert!(timeout(&mut b, 599).delivered.is_empty());
    assert_eq!(ids(&timeout(&mut b, 600)), vec![("m1", 1)]);
    let reason = Some("bad input".into());
    let d = settle(&mut b, conn, "m2", Settle::Term { reason }, 700);
    assert_eq!(d.answers, vec![(99, Answer::Ok)]);
    match &d.persisted[0].1[..] {
        [Record::DeadLetter(dead)] => {
            assert_eq!(dead.reason, DeadReason::Terminated);
            assert_eq!(dead.detail.as_deref(), Some("bad input"));
        }
        other => panic!("not persisted, so only the dead letter: {other:?}"),
    }
}

#[test]
fn past_max_pending_deliveries_wait_and_are_not_dropped() {
    let mut config = delivery();
    config.inbox_max_messages = 10;
    let mut b = broker(config);
    let (conn, _) = online(&mut b, 1, 0);
    let mut out = Effects::default();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        b.send_to_inbox(put(id, false, None, i as u64), 0, &mut out);
    }
    assert_eq!(ids(&done(&mut out)), vec![("a", 0), ("b", 0)]);
    assert_eq!(
        ids(&settle(&mut b, conn, "b", Settle::Ack, 1)),
        vec![("c", 0)]
    );
}

#[test]
fn a_repeated_msg_id_is_a_duplicate_within_the_window_only() {
    let mut b = broker(delivery());
    let (_, _) = online(&mut b, 1, 0);
    let mut out = Effects::default();
    b.send_to_inbox(put("m1", false, Some("k"), 1), 0, &mut out);
    b.send_to_inbox(put("m2", false, Some("k"), 2), 119_999, &mut out);
    let d = done(&mut out);
    assert_eq!(d.answers, vec![(1, Answer::Ok), (2, Answer::Duplicate)]);
    assert_eq!(ids(&d), vec![("m1", 0)]);
    b.send_to_inbox(put("m3", false, Some("k"), 3), 120_000, &mut out);
    let d = done(&mut out);
    assert_eq!(
        (d.answers[0].1.clone(), ids(&d)),
        (Answer::Ok, vec![("m3", 0)])
    );
}

#[test]
fn a_failed_write_is_refused_and_may_be_retried_with_the_same_msg_id() {
    let mut b = broker(delivery());
    let mut out = Effects::default();
    b.send_to_inbox(put("m1", true, Some("k"), 1), 0, &mut out);
    let token = done(&mut out).persisted[0].0.unwrap();
    b.stored(token, false, 1, &mut out);
    let d = done(&mut out);
    assert_eq!(d.answers, vec![(1, Answer::Refused(Refusal::StoreFailed))]);
    b.send_to_inbox(put("m2", true, Some("k"), 2), 2, &mut out);
    assert_eq!(done(&mut out).persisted.len(), 1, "not a duplicate");
}

#[test]
fn a_full_inbox_refuses_and_keeps_what_it_has() {
    let mut b = broker(delivery());
    let mut out = Effects::default();
    for i in 0..4 {
        b.send_to_inbox(put(&format!("m{i}"), false, None, i), 0, &mut out);
    }
    let d = done(&mut out);
    assert!(matches!(
        d.answers[3].1,
        Answer::Refused(Refusal::InboxFull(_))
    ));
    let (_, d) = online(&mut b, 1, 1);
    assert_eq!(ids(&d), vec![("m0", 0), ("m1", 0)], "max_pending = 2");
}

#[test]
fn an_expired_message_is_dead_lettered() {
    let mut b = broker(delivery());
    let mut out = Effects::default();
    b.send_to_inbox(put("m1", false, None, 1), 0, &mut out);
    done(&mut out);
    let d = timeout(&mut b, 1_000_000);
    match &d.persisted[0].1[..] {
        [Record::DeadLetter(dead)] => assert_eq!(dead.reason, DeadReason::Expired),
        other => panic!("{other:?}"),
    }
    assert!(online(&mut b, 1, 1_000_001).1.delivered.is_empty());
}

#[test]
fn a_restored_message_is_marked_redelivered_and_new_ones_follow_it() {
    let mut b = broker(delivery());
    let text = r#"{"op":"message","user":"bob","id":"old","ack":true,"data":1}"#;
    let stored = StoredMessage {
        id: "old".into(),
        payload: bytes::Bytes::from(text),
        priority: Priority::Normal,
        created_ms: 0,
        expires_ms: 1_000_000,
        not_before_ms: 0,
        from: None,
    };
    b.restore_inbox("bob".into(), 41, stored, 5);
    let mut out = Effects::default();
    b.send_to_inbox(put("new", true, None, 1), 5, &mut out);
    match &done(&mut out).persisted[0].1[0] {
        Record::InboxPut { seq, .. } => assert_eq!(*seq, 42),
        other => panic!("{other:?}"),
    }
    let (_, d) = online(&mut b, 1, 10);
    assert_eq!(ids(&d), vec![("old", 1)]);
}

#[test]
fn a_user_going_offline_spends_no_attempt_while_away() {
    let mut b = broker(delivery());
    let (conn, _) = online(&mut b, 1, 0);
    let mut out = Effects::default();
    b.send_to_inbox(put("m1", false, None, 1), 0, &mut out);
    assert_eq!(ids(&done(&mut out)), vec![("m1", 0)]);
    b.disconnect(conn, 1, &mut out);
    assert!(timeout(&mut b, 10 * WAIT).delivered.is_empty());
    let (_, d) = online(&mut b, 2, 10 * WAIT);
    assert_eq!(ids(&d), vec![("m1", 1)]);
}

#[test]
fn an_anonymous_connection_has_nothing_to_ack() {
    let mut b = broker(delivery());
    let mut out = Effects::default();
    let id = ConnId::new(0, 1);
    let anonymous = Peer {
        user: None,
        ..user_peer("x")
    };
    b.connect(id, anonymous);
    b.announce(id, 0, &mut out);
    let d = settle(&mut b, id, "m1", Settle::Ack, 0);
    assert!(matches!(
        d.answers[0].1,
        Answer::Refused(Refusal::UnknownMessage(_))
    ));
}

#[test]
fn scheduled_messages_wait_for_their_time_and_leave_in_time_order() {
    let mut b = broker(delivery());
    let (_, _) = online(&mut b, 1, 0);
    let mut out = Effects::default();
    b.send_to_inbox(scheduled("late", 5_000, 1), 0, &mut out);
    b.send_to_inbox(scheduled("early", 2_000, 2), 0, &mut out);
    let d = confirm(&mut b, &done(&mut out), 10);
    assert!(d.delivered.is_empty(), "not before their time");
    assert!(d
        .answers
        .iter()
        .all(|(_, a)| matches!(a, Answer::Scheduled(_))));
    assert_eq!(b.poll_timeout(), Some(2_000));
    assert!(timeout(&mut b, 1_999).delivered.is_empty());
    let early = settle(&mut b, ConnId::new(0, 1), "early", Settle::Ack, 1_999);
    assert!(
        matches!(
            early.answers[0].1,
            Answer::Refused(Refusal::UnknownMessage(_))
        ),
        "not delivered yet, so nothing to ack"
    );
    assert_eq!(ids(&timeout(&mut b, 2_000)), vec![("early", 0)]);
    assert_eq!(ids(&timeout(&mut b, 5_000)), vec![("late", 0)]);
}

#[test]
fn only_the_sender_cancels_and_only_before_the_first_delivery() {
    let mut b = broker(delivery());
    let (conn, _) = online(&mut b, 1, 0);
    let mut out = Effects::default();
    b.send_to_inbox(scheduled("m1:bob", 5_000, 1), 0, &mut out);
    b.send_to_inbox(scheduled("m2:bob", 100, 2), 0, &mut out);
    confirm(&mut b, &done(&mut out), 1);
    let cancel = |b: &mut Broker, who: &str, id: &str| {
        let mut out = Effects::default();
        let sender = ConnId::new(0, 9);
        b.connect(sender, user_peer(who));
        b.cancel(sender, id, Origin { shard: 0, token: 7 }, 200, &mut out);
        b.disconnect(sender, 200, &mut out);
        done(&mut out)
    };
    let refused = |d: &Done| matches!(d.answers[0].1, Answer::Refused(Refusal::UnknownMessage(_)));
    assert!(
        refused(&cancel(&mut b, "mallory", "m1:bob")),
        "not the sender"
    );
    // m2 is delivered at 100: too late to cancel it.
    assert_eq!(ids(&timeout(&mut b, 100)), vec![("m2:bob", 0)]);
    assert!(refused(&cancel(&mut b, "ann", "m2:bob")));
    let d = cancel(&mut b, "ann", "m1:bob");
    assert_eq!(d.answers, vec![(7, Answer::Ok)]);
    assert!(matches!(d.persisted[0].1[0], Record::InboxDelete { .. }));
    assert!(timeout(&mut b, 5_000).delivered.is_empty(), "cancelled");
    let _ = conn;
}

#[test]
fn a_restored_schedule_not_yet_due_waits_and_is_not_marked_redelivered() {
    let mut b = broker(delivery());
    let text = r#"{"op":"message","user":"bob","id":"s:bob","ack":true,"data":1}"#;
    let stored = StoredMessage {
        id: "s:bob".into(),
        payload: bytes::Bytes::from(text),
        priority: Priority::Normal,
        created_ms: 0,
        expires_ms: 1_000_000,
        not_before_ms: 500,
        from: Some("ann".into()),
    };
    b.restore_inbox("bob".into(), 1, stored, 100);
    let (_, d) = online(&mut b, 1, 100);
    assert!(d.delivered.is_empty());
    assert_eq!(ids(&timeout(&mut b, 500)), vec![("s:bob", 0)]);
}
