//! Acknowledged subscriptions and groups, across shards' brokers without sockets, with time
//! passed in.

use std::sync::Arc;

use super::group_tests::{key, Cluster};
use super::*;
use crate::ids::ConnId;
use crate::protocol::Balance;

fn conn(shard: usize, n: u64) -> ConnId {
    ConnId::new(shard, n)
}

fn config(max_pending: usize) -> DeliveryConfig {
    DeliveryConfig {
        wait_ms: 1000,
        backoff_ms: vec![100].into(),
        max_deliver: 3,
        max_pending,
        ..DeliveryConfig::default()
    }
}

/// Publishes message `id` on channel `channel` (every shard sees it).
fn publish(c: &mut Cluster, channel: &str, id: &str) {
    let text = format!(r#"{{"op":"message","channel":"{channel}","id":"{id}","data":1}}"#);
    c.publish(0, channel, &text);
}

/// The ids `id` received, with `"ack":true` checked, and its redelivery counts.
fn got(c: &Cluster, id: ConnId) -> Vec<String> {
    let texts = c.received.get(&id).cloned().unwrap_or_default();
    texts
        .iter()
        .map(|t| {
            assert!(t.contains(r#""ack":true"#), "{t}");
            let id = t
                .split(r#""id":""#)
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            match t.split(r#""redelivered":"#).nth(1) {
                Some(k) => format!("{id}+{}", k.trim_end_matches('}')),
                None => id.to_string(),
            }
        })
        .collect()
}

fn settle(c: &mut Cluster, id: ConnId, msg: &str, how: Settle) -> Answer {
    let now = c.now;
    let origin = Origin {
        shard: id.shard(),
        token: 900,
    };
    c.on(id.shard(), |b, out| {
        b.settle(id, msg, how, origin, now, out)
    });
    c.results.pop().expect("an answer").1
}

fn join_acked(c: &mut Cluster, id: ConnId, channel: &str, durable: bool) {
    let load = Arc::new(Load::default());
    let (k, now) = (key(channel, "g"), c.now);
    let ack = Some(durable);
    c.on(id.shard(), |b, out| {
        b.join_group(id, k, Balance::RoundRobin, &load, 1, ack, now, out)
            .unwrap()
    });
}

fn dead(c: &Cluster) -> Vec<(String, DeadReason)> {
    let dead = c.records.iter().filter_map(|r| match r {
        Record::DeadLetter(d) => Some((d.destination.to_string(), d.reason)),
        _ => None,
    });
    dead.collect()
}

#[test]
fn a_plain_acked_subscription_redelivers_until_max_deliver_then_dead_letters() {
    let mut c = Cluster::with(2, config(10));
    let a = conn(1, 1);
    c.connect(a);
    c.on(1, |b, out| b.subscribe_acked(a, "jobs", 0, out).unwrap());
    publish(&mut c, "jobs", "m1");
    assert_eq!(got(&c, a), ["m1"]);
    c.advance(999);
    assert_eq!(got(&c, a), ["m1"], "not before wait_ms");
    c.advance(1000);
    c.advance(1100);
    assert_eq!(
        got(&c, a),
        ["m1", "m1+1"],
        "after wait_ms and the backoff step"
    );
    c.advance(2100);
    c.advance(2200);
    assert_eq!(got(&c, a), ["m1", "m1+1", "m1+2"]);
    c.advance(3200);
    let queue = format!("sub:{a}@jobs");
    assert_eq!(dead(&c), [(queue, DeadReason::MaxDeliver)]);
    c.advance(10_000);
    assert_eq!(got(&c, a).len(), 3, "a dead letter is not delivered again");
}

#[test]
fn an_ack_settles_and_a_second_ack_is_refused() {
    let mut c = Cluster::with(1, config(10));
    let a = conn(0, 1);
    c.connect(a);
    c.on(0, |b, out| b.subscribe_acked(a, "jobs", 0, out).unwrap());
    publish(&mut c, "jobs", "m1");
    assert_eq!(settle(&mut c, a, "m1", Settle::Ack), Answer::Ok);
    c.advance(5000);
    assert_eq!(got(&c, a), ["m1"], "acknowledged: never again");
    let again = settle(&mut c, a, "m1", Settle::Ack);
    assert!(matches!(again, Answer::Refused(Refusal::UnknownMessage(_))));
}

#[test]
fn max_pending_holds_deliveries_back_until_an_ack() {
    let mut c = Cluster::with(1, config(2));
    let a = conn(0, 1);
    c.connect(a);
    c.on(0, |b, out| b.subscribe_acked(a, "jobs", 0, out).unwrap());
    for id in ["m1", "m2", "m3"] {
        publish(&mut c, "jobs", id);
    }
    assert_eq!(got(&c, a), ["m1", "m2"], "two in flight at most");
    settle(&mut c, a, "m1", Settle::Ack);
    assert_eq!(got(&c, a), ["m1", "m2", "m3"], "not dropped: it waited");
}

#[test]
fn nak_redelivers_after_its_delay_and_term_dead_letters() {
    let mut c = Cluster::with(1, config(10));
    let a = conn(0, 1);
    c.connect(a);
    c.on(0, |b, out| b.subscribe_acked(a, "jobs", 0, out).unwrap());
    publish(&mut c, "jobs", "m1");
    publish(&mut c, "jobs", "m2");
    settle(&mut c, a, "m1", Settle::Nak { delay_ms: 50 });
    c.advance(49);
    assert_eq!(got(&c, a), ["m1", "m2"]);
    c.advance(50);
    assert_eq!(got(&c, a), ["m1", "m2", "m1+1"]);
    let term = Settle::Term {
        reason: Some("bad input".into()),
    };
    assert_eq!(settle(&mut c, a, "m2", term), Answer::Ok);
    assert_eq!(
        dead(&c),
        [(format!("sub:{a}@jobs"), DeadReason::Terminated)]
    );
}

#[test]
fn a_plain_and_an_acked_subscription_to_one_channel_conflict() {
    let mut c = Cluster::with(1, config(10));
    let a = conn(0, 1);
    c.connect(a);
    c.on(0, |b, out| b.subscribe_acked(a, "jobs", 0, out).unwrap());
    let mut out = Effects::default();
    let plain = c.brokers[0].subscribe(a, "jobs", false, &mut out);
    assert!(matches!(plain, Err(Refusal::Subscribed(_))));
    c.on(0, |b, out| b.unsubscribe(a, "jobs", out).unwrap());
    publish(&mut c, "jobs", "m1");
    assert!(got(&c, a).is_empty(), "unsubscribed: its queue is gone");
}

#[test]
fn a_group_gives_each_message_to_one_member_and_hands_over_on_disconnect() {
    let mut c = Cluster::with(3, config(10));
    let (a, b) = (conn(1, 1), conn(2, 1));
    c.connect(a);
    c.connect(b);
    join_acked(&mut c, a, "jobs", false);
    join_acked(&mut c, b, "jobs", false);
    publish(&mut c, "jobs", "m1");
    publish(&mut c, "jobs", "m2");
    assert_eq!(got(&c, a).len() + got(&c, b).len(), 2);
    assert_eq!(got(&c, a).len(), 1, "the one with fewer in flight");
    let held_by_a = got(&c, a)[0].clone();
    // `a` acks from its own shard; the ack finds the queue at the group's home.
    assert_eq!(settle(&mut c, a, &held_by_a, Settle::Ack), Answer::Ok);
    publish(&mut c, "jobs", "m3");
    let m3_to_a = got(&c, a).contains(&"m3".to_string());
    let now = c.now;
    c.on(1, |br, out| br.disconnect(a, now, out));
    if m3_to_a {
        assert!(
            got(&c, b).contains(&"m3+1".to_string()),
            "handed over at once"
        );
    }
    publish(&mut c, "jobs", "m4");
    assert!(
        got(&c, b).contains(&"m4".to_string()),
        "the remaining member gets all"
    );
}

#[test]
fn a_message_not_acked_in_time_goes_to_another_member() {
    let mut c = Cluster::with(2, config(1));
    let (a, b) = (conn(0, 1), conn(1, 1));
    c.connect(a);
    c.connect(b);
    join_acked(&mut c, a, "jobs", false);
    join_acked(&mut c, b, "jobs", false);
    publish(&mut c, "jobs", "m1");
    let (first, other) = match got(&c, a).is_empty() {
        true => (b, a),
        false => (a, b),
    };
    c.advance(1000);
    c.advance(1100);
    assert_eq!(got(&c, other), ["m1+1"], "redelivered to the other member");
    // The first one's late ack still settles it (the work was done).
    assert_eq!(settle(&mut c, first, "m1", Settle::Ack), Answer::Ok);
    c.advance(5000);
    assert_eq!(got(&c, other), ["m1+1"]);
}

#[test]
fn a_durable_group_keeps_messages_without_members_and_across_a_restart() {
    let mut c = Cluster::with(2, config(10));
    let a = conn(1, 1);
    c.connect(a);
    join_acked(&mut c, a, "jobs", true);
    let queue = group_queue(&key("jobs", "g"));
    assert!(c.records.contains(&Record::Durable {
        queue: queue.clone()
    }));
    let now = c.now;
    c.on(1, |b, out| b.disconnect(a, now, out));
    publish(&mut c, "jobs", "m1");
    assert!(c.storing.len() == 1, "written to the store");
    c.confirm_stores();
    // A restart: new brokers get back what the store holds.
    let stored: Vec<_> = c
        .records
        .iter()
        .filter_map(|r| match r {
            Record::QueuePut {
                queue,
                seq,
                message,
                ..
            } => Some((queue.clone(), *seq, message.clone())),
            _ => None,
        })
        .collect();
    let mut c = Cluster::with(2, config(10));
    let home = key("jobs", "g").home(2);
    c.brokers[home].restore_durable(queue.clone());
    for (queue, seq, message) in stored {
        c.brokers[home].restore_queued(queue, seq, message, 0);
    }
    publish(&mut c, "jobs", "m2");
    c.confirm_stores();
    let b = conn(0, 7);
    c.connect(b);
    join_acked(&mut c, b, "jobs", false);
    // Restored messages may have been delivered before: they are marked so.
    assert_eq!(
        got(&c, b),
        ["m1+1", "m2"],
        "kept across the restart, in order"
    );
}

#[test]
fn a_group_without_durable_closes_with_its_last_member() {
    let mut c = Cluster::with(2, config(10));
    let a = conn(1, 1);
    c.connect(a);
    join_acked(&mut c, a, "jobs", false);
    let now = c.now;
    c.on(1, |b, out| b.disconnect(a, now, out));
    publish(&mut c, "jobs", "m1");
    let b = conn(1, 2);
    c.connect(b);
    join_acked(&mut c, b, "jobs", false);
    assert!(got(&c, b).is_empty(), "published while it had no member");
    assert!(!c
        .records
        .iter()
        .any(|r| matches!(r, Record::QueuePut { .. })));
}

#[test]
fn a_persist_publish_counts_the_durable_groups_that_answer() {
    let mut c = Cluster::with(1, config(10));
    let a = conn(0, 1);
    c.connect(a);
    join_acked(&mut c, a, "jobs", true);
    let text = r#"{"op":"message","channel":"jobs","id":"m1","data":1}"#;
    let frame =
        crate::protocol::frame::encode(crate::protocol::frame::OpCode::Text, text.as_bytes());
    let message = Published::new("jobs", crate::protocol::Priority::Normal, frame, usize::MAX);
    let origin = Some(Origin {
        shard: 0,
        token: 77,
    });
    let mut waiting = 0;
    c.on(0, |b, out| {
        waiting = b.route_queued(&message, origin, 0, out)
    });
    assert_eq!(waiting, 1);
    assert!(!c.joined.contains(&77), "not before the store confirms");
    c.confirm_stores();
    assert!(c.results.contains(&(77, Answer::Ok)));
    assert_eq!(got(&c, a), ["m1"], "delivered once stored");
}

#[test]
fn a_repeated_msg_id_is_queued_once_and_answered_duplicate() {
    let mut c = Cluster::with(1, config(10));
    let a = conn(0, 1);
    c.connect(a);
    join_acked(&mut c, a, "jobs", true);
    let mut answers = Vec::new();
    for (token, id) in [(1, "m1"), (2, "m2")] {
        let text = format!(r#"{{"op":"message","channel":"jobs","id":"{id}","data":1}}"#);
        let frame =
            crate::protocol::frame::encode(crate::protocol::frame::OpCode::Text, text.as_bytes());
        let mut message = Published::new("jobs", Priority::Normal, frame, usize::MAX);
        message.msg_id = Some("same".into());
        let origin = Some(Origin { shard: 0, token });
        c.on(0, |b, out| {
            b.route_queued(&message, origin, 0, out);
        });
        c.confirm_stores();
        answers.push(c.results.iter().find(|r| r.0 == token).map(|r| r.1.clone()));
    }
    assert_eq!(answers, [Some(Answer::Ok), Some(Answer::Duplicate)]);
    assert_eq!(got(&c, a), ["m1"], "the repeat is delivered nowhere");
    let kept = c
        .records
        .iter()
        .filter(|r| matches!(r, Record::Dedup { .. }));
    assert_eq!(kept.count(), 1, "the key is stored with the message");
}

#[test]
fn a_durable_group_past_the_bound_is_refused_and_not_joined() {
    let config = DeliveryConfig {
        max_durable_groups: 1,
        ..config(10)
    };
    let mut c = Cluster::with(1, config);
    let a = conn(0, 1);
    c.connect(a);
    join_acked(&mut c, a, "one", true);
    assert_eq!(c.results.pop().map(|r| r.1), Some(Answer::Ok));
    join_acked(&mut c, a, "two", true);
    let refused = c.results.pop().map(|r| r.1);
    assert_eq!(
        refused,
        Some(Answer::Refused(Refusal::TooManyDurableGroups(1)))
    );
    // Not a member: leaving says so; a group that is not durable may still be made.
    let mut out = Effects::default();
    let left = c.brokers[0].leave_group(a, key("two", "g"), 0, &mut out);
    assert!(matches!(left, Err(Refusal::NotSubscribed(_))));
    join_acked(&mut c, a, "three", false);
    assert_eq!(c.results.pop().map(|r| r.1), Some(Answer::Ok));
}
