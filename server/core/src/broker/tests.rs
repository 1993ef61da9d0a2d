//! The broker's delivery rules, without sockets or sleeps: what each connection would be sent,
//! in order, and when.

use std::sync::Arc;

use super::*;
use crate::auth::Permissions;
use crate::protocol::envelope::ErrorCode;
use crate::protocol::frame::{self, OpCode};
use crate::protocol::Balance;
use crate::protocol::Priority;

const BATCH: bool = true;
const NOW: bool = false;

fn broker() -> Broker {
    Broker::new(BrokerConfig {
        shard: 0,
        shards: 1,
        presence_max_users: 10,
        max_subscriptions: 4,
        max_batch_bytes: 1000,
        delivery: DeliveryConfig::default(),
        history: Default::default(),
        boot: 0,
    })
}

fn peer() -> Peer {
    Peer {
        lz4: false,
        user: None,
        permissions: Arc::new(Permissions::all()),
    }
}

fn conn(n: u64) -> ConnId {
    ConnId::new(0, n)
}

fn message(channel: &str, text: &str, priority: Priority) -> Arc<Published> {
    let frame = frame::encode(OpCode::Text, text.as_bytes());
    Arc::new(Published::new(channel, priority, frame, usize::MAX))
}

/// What the effects send, as (connection, payloads in one write unit), and whether a release
/// was asked for.
#[derive(Debug, Default, PartialEq)]
struct Sent {
    deliveries: Vec<(ConnId, String)>,
    armed: bool,
}

fn sent(out: &mut Effects) -> Sent {
    let mut sent = Sent::default();
    out.drain(|action| match action {
        Action::Deliver { message, to } => {
            let text = String::from_utf8(frame::payload_of(&message.frame).to_vec()).unwrap();
            sent.deliveries
                .extend(to.iter().map(|&id| (id, text.clone())));
        }
        Action::Frames { to, frames, .. } => {
            sent.deliveries.push((to, payloads(&frames)));
        }
        Action::Arm => sent.armed = true,
        Action::ToShard { .. }
        | Action::Answer { .. }
        | Action::Presence { .. }
        | Action::Persist { .. }
        | Action::Broadcast { .. } => {}
    });
    sent.deliveries.sort();
    sent
}

/// The payloads of the unmasked text frames in `frames`, joined by `+`.
fn payloads(mut frames: &[u8]) -> String {
    let mut out = Vec::new();
    while !frames.is_empty() {
        let (head, len) = match frames[1] {
            126 => (4, u16::from_be_bytes([frames[2], frames[3]]) as usize),
            n => (2, n as usize),
        };
        out.push(String::from_utf8(frames[head..head + len].to_vec()).unwrap());
        frames = &frames[head + len..];
    }
    out.join("+")
}

fn deliveries(list: &[(u64, &str)]) -> Vec<(ConnId, String)> {
    list.iter()
        .map(|&(c, t)| (conn(c), t.to_string()))
        .collect()
}

#[test]
fn an_idle_shard_delivers_at_once_to_every_subscriber_of_the_channel() {
    let (mut b, mut out) = (broker(), Effects::default());
    for n in 1..=3 {
        b.connect(conn(n), peer());
    }
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    b.subscribe(conn(2), "a", false, &mut out).unwrap();
    b.subscribe(conn(3), "b", false, &mut out).unwrap();
    b.publish(&message("a", "m1", Priority::Normal), NOW, &mut out);
    let got = sent(&mut out);
    assert_eq!(got.deliveries, deliveries(&[(1, "m1"), (2, "m1")]));
    assert!(!got.armed);
}

#[test]
fn a_busy_shard_batches_until_the_release_then_sends_one_unit_per_subscriber() {
    let (mut b, mut out) = (broker(), Effects::default());
    b.connect(conn(1), peer());
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    b.publish(&message("a", "m1", Priority::Normal), BATCH, &mut out);
    b.publish(&message("a", "m2", Priority::Normal), BATCH, &mut out);
    let got = sent(&mut out);
    assert!(got.deliveries.is_empty() && got.armed, "{got:?}");
    // Once a batch waits, later messages join it even when not batching, to keep order.
    b.publish(&message("a", "m3", Priority::Normal), NOW, &mut out);
    assert!(sent(&mut out).deliveries.is_empty());
    b.release(&mut out);
    assert_eq!(sent(&mut out).deliveries, deliveries(&[(1, "m1+m2+m3")]));
    b.release(&mut out);
    assert_eq!(
        sent(&mut out),
        Sent::default(),
        "a release empties the batch"
    );
}

#[test]
fn a_batch_reaching_max_bytes_goes_out_at_once() {
    let (mut b, mut out) = (broker(), Effects::default());
    b.connect(conn(1), peer());
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    let big = "x".repeat(600);
    b.publish(&message("a", &big, Priority::Normal), BATCH, &mut out);
    assert!(sent(&mut out).deliveries.is_empty());
    b.publish(&message("a", &big, Priority::Normal), BATCH, &mut out);
    let got = sent(&mut out);
    assert_eq!(
        got.deliveries.len(),
        1,
        "1200 bytes >= 1000: sent without a release"
    );
}

#[test]
fn a_critical_message_sends_the_waiting_batch_ahead_of_itself_and_never_waits() {
    let (mut b, mut out) = (broker(), Effects::default());
    b.connect(conn(1), peer());
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    b.publish(&message("a", "m1", Priority::Normal), BATCH, &mut out);
    b.publish(&message("a", "c", Priority::Critical), BATCH, &mut out);
    let mut order = Vec::new();
    out.drain(|action| match action {
        Action::Frames { frames, .. } => order.push(payloads(&frames)),
        Action::Deliver { .. } => order.push("critical".into()),
        _ => {}
    });
    assert_eq!(order, ["m1", "critical"]);
}

#[test]
fn batch_membership_is_decided_at_publish_time() {
    let (mut b, mut out) = (broker(), Effects::default());
    for n in 1..=3 {
        b.connect(conn(n), peer());
    }
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    b.subscribe(conn(2), "a", false, &mut out).unwrap();
    b.publish(&message("a", "m1", Priority::Normal), BATCH, &mut out);
    // 3 joins while m1 waits: it gets only what is published after.
    b.subscribe(conn(3), "a", false, &mut out).unwrap();
    b.publish(&message("a", "m2", Priority::Normal), BATCH, &mut out);
    // 2 leaves: it gets at once what it was there for, and nothing goes out early for others.
    b.unsubscribe(conn(2), "a", &mut out).unwrap();
    assert_eq!(sent(&mut out).deliveries, deliveries(&[(2, "m1+m2")]));
    b.publish(&message("a", "m3", Priority::Normal), BATCH, &mut out);
    b.release(&mut out);
    assert_eq!(
        sent(&mut out).deliveries,
        deliveries(&[(1, "m1+m2+m3"), (3, "m2+m3")])
    );
}

#[test]
fn lanes_are_sent_as_separate_units_each_in_publish_order() {
    let (mut b, mut out) = (broker(), Effects::default());
    b.connect(conn(1), peer());
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    b.publish(&message("a", "n1", Priority::Normal), BATCH, &mut out);
    b.publish(&message("a", "h1", Priority::High), BATCH, &mut out);
    b.publish(&message("a", "n2", Priority::Normal), BATCH, &mut out);
    b.release(&mut out);
    let mut units = Vec::new();
    out.drain(|action| {
        if let Action::Frames { lane, frames, .. } = action {
            units.push((lane, payloads(&frames)));
        }
    });
    assert_eq!(
        units,
        [
            (Priority::High, "h1".into()),
            (Priority::Normal, "n1+n2".into())
        ]
    );
}

#[test]
fn a_disconnected_connection_leaves_every_channel_and_gets_nothing_more() {
    let (mut b, mut out) = (broker(), Effects::default());
    b.connect(conn(1), peer());
    b.connect(conn(2), peer());
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    b.subscribe(conn(1), "b", false, &mut out).unwrap();
    b.subscribe(conn(2), "a", false, &mut out).unwrap();
    b.publish(&message("a", "m1", Priority::Normal), BATCH, &mut out);
    b.disconnect(conn(1), 0, &mut out);
    b.release(&mut out);
    assert_eq!(sent(&mut out).deliveries, deliveries(&[(2, "m1")]));
    b.publish(&message("b", "m2", Priority::Normal), NOW, &mut out);
    assert!(sent(&mut out).deliveries.is_empty());
}

#[test]
fn subscriptions_are_bounded_and_unsubscribing_needs_a_subscription() {
    let (mut b, mut out) = (broker(), Effects::default());
    b.connect(conn(1), peer());
    for channel in ["a", "b", "c", "d"] {
        b.subscribe(conn(1), channel, false, &mut out).unwrap();
    }
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    assert_eq!(
        b.subscribe(conn(1), "e", false, &mut out),
        Err(Refusal::TooManySubscriptions(4))
    );
    b.unsubscribe(conn(1), "a", &mut out).unwrap();
    assert_eq!(
        b.unsubscribe(conn(1), "a", &mut out).map_err(|r| r.code()),
        Err(ErrorCode::NotSubscribed)
    );
    b.subscribe(conn(1), "e", false, &mut out).unwrap();
}

#[test]
fn pattern_subscribers_get_matching_channels_once_however_many_subscriptions_match() {
    let (mut b, mut out) = (broker(), Effects::default());
    for n in 1..=4 {
        b.connect(conn(n), peer());
    }
    b.subscribe(conn(1), "news.*", false, &mut out).unwrap();
    b.subscribe(conn(2), "news.>", false, &mut out).unwrap();
    // 3 holds the channel, a pattern and a wider pattern: still one copy.
    for name in ["news.eu", "news.*", ">"] {
        b.subscribe(conn(3), name, false, &mut out).unwrap();
    }
    b.subscribe(conn(4), "sports.*", false, &mut out).unwrap();
    b.publish(&message("news.eu", "m1", Priority::Normal), NOW, &mut out);
    assert_eq!(
        sent(&mut out).deliveries,
        deliveries(&[(1, "m1"), (2, "m1"), (3, "m1")])
    );
    b.publish(
        &message("news.eu.fr", "m2", Priority::Normal),
        NOW,
        &mut out,
    );
    assert_eq!(
        sent(&mut out).deliveries,
        deliveries(&[(2, "m2"), (3, "m2")])
    );
    b.unsubscribe(conn(2), "news.>", &mut out).unwrap();
    b.disconnect(conn(3), 0, &mut out);
    b.publish(
        &message("news.eu.fr", "m3", Priority::Normal),
        NOW,
        &mut out,
    );
    assert!(sent(&mut out).deliveries.is_empty());
}

#[test]
fn a_pattern_matched_publish_sends_the_channels_waiting_batch_first() {
    let (mut b, mut out) = (broker(), Effects::default());
    b.connect(conn(1), peer());
    b.connect(conn(2), peer());
    b.subscribe(conn(1), "news.eu", false, &mut out).unwrap();
    b.publish(&message("news.eu", "m1", Priority::Normal), BATCH, &mut out);
    b.subscribe(conn(2), "news.*", false, &mut out).unwrap();
    b.publish(&message("news.eu", "m2", Priority::Normal), BATCH, &mut out);
    let mut order = Vec::new();
    out.drain(|action| match action {
        Action::Frames { to, frames, .. } => order.push((to, payloads(&frames))),
        Action::Deliver { message, to } => {
            let text = String::from_utf8(frame::payload_of(&message.frame).to_vec()).unwrap();
            order.extend(to.iter().map(|&id| (id, text.clone())));
        }
        _ => {}
    });
    assert_eq!(
        order,
        deliveries(&[(1, "m1"), (1, "m2"), (2, "m2")]),
        "1 gets m1 before m2; 2 subscribed after m1"
    );
}

#[test]
fn permissions_decide_what_a_connection_may_subscribe_and_publish_to() {
    let (mut b, mut out) = (broker(), Effects::default());
    let limited = Permissions::new(vec!["news.>".into()], vec!["chat.*".into()]);
    b.connect(
        conn(1),
        Peer {
            permissions: Arc::new(limited),
            ..peer()
        },
    );
    b.subscribe(conn(1), "news.*", false, &mut out).unwrap();
    b.subscribe(conn(1), "news.eu.fr", false, &mut out).unwrap();
    for denied in [">", "news", "chat.x", "*.eu"] {
        let refusal = b.subscribe(conn(1), denied, false, &mut out).unwrap_err();
        assert_eq!(refusal.code(), ErrorCode::Forbidden, "{denied}");
    }
    assert_eq!(b.check_publish(conn(1), "chat.x"), Ok(()));
    assert!(b.check_publish(conn(1), "news.eu").is_err());
    // A refreshed token's permissions apply from then on.
    b.refresh(conn(1), Arc::new(Permissions::all()));
    b.subscribe(conn(1), ">", false, &mut out).unwrap();
    assert_eq!(b.check_publish(conn(1), "news.eu"), Ok(()));
    let _ = sent(&mut out);
}

#[test]
fn a_direct_message_reaches_every_connection_of_its_user_on_this_shard() {
    let (mut b, mut out) = (broker(), Effects::default());
    let user = |name: &str| Peer {
        user: Some(name.into()),
        ..peer()
    };
    b.connect(conn(1), user("alice"));
    b.connect(conn(2), user("alice"));
    b.connect(conn(3), user("bob"));
    b.connect(conn(4), peer());
    let m = message("", "hi", Priority::Normal);
    assert_eq!(b.send_local("alice", &m, &mut out), 2);
    assert_eq!(
        sent(&mut out).deliveries,
        deliveries(&[(1, "hi"), (2, "hi")])
    );
    assert_eq!(b.send_local("nobody", &m, &mut out), 0);
    b.disconnect(conn(1), 0, &mut out);
    assert_eq!(b.send_local("alice", &m, &mut out), 1);
    b.disconnect(conn(2), 0, &mut out);
    assert_eq!(b.send_local("alice", &m, &mut out), 0);
    let _ = sent(&mut out);
    // Sending is publishing to user.<id> as far as permissions go.
    let limited = Permissions::new(vec![], vec!["user.bob".into()]);
    b.connect(
        conn(5),
        Peer {
            permissions: Arc::new(limited),
            ..peer()
        },
    );
    assert_eq!(b.check_send(conn(5), "bob"), Ok(()));
    assert_eq!(
        b.check_send(conn(5), "alice").map_err(|r| r.code()),
        Err(ErrorCode::Forbidden)
    );
}

#[test]
fn group_memberships_count_against_max_subscriptions_and_need_permission() {
    let (mut b, mut out) = (broker(), Effects::default());
    b.connect(conn(1), peer());
    let load = Arc::new(Load::default());
    let key = |n: u32| GroupKey {
        channel: "tasks".into(),
        group: format!("g{n}").into(),
    };
    b.subscribe(conn(1), "a", false, &mut out).unwrap();
    for n in 0..3 {
        b.join_group(
            conn(1),
            key(n),
            Balance::RoundRobin,
            &load,
            1,
            None,
            0,
            &mut out,
        )
        .unwrap();
    }
    // 1 subscription + 3 groups = max_subscriptions (4): one more of either is refused.
    let refused = b.join_group(
        conn(1),
        key(9),
        Balance::RoundRobin,
        &load,
        1,
        None,
        0,
        &mut out,
    );
    assert_eq!(refused, Err(Refusal::TooManySubscriptions(4)));
    assert!(b.subscribe(conn(1), "b", false, &mut out).is_err());
    // Joining again is not another membership; leaving frees a place.
    b.join_group(
        conn(1),
        key(0),
        Balance::RoundRobin,
        &load,
        1,
        None,
        0,
        &mut out,
    )
    .unwrap();
    b.leave_group(conn(1), key(0), 0, &mut out).unwrap();
    assert_eq!(
        b.leave_group(conn(1), key(0), 0, &mut out)
            .map_err(|r| r.code()),
        Err(ErrorCode::NotSubscribed)
    );
    b.subscribe(conn(1), "b", false, &mut out).unwrap();
    // Without permission to subscribe to the channel, no joining its group.
    let limited = Permissions::new(vec!["news.>".into()], vec![]);
    b.connect(
        conn(2),
        Peer {
            permissions: Arc::new(limited),
            ..peer()
        },
    );
    let denied = b.join_group(
        conn(2),
        key(0),
        Balance::RoundRobin,
        &load,
        2,
        None,
        0,
        &mut out,
    );
    assert_eq!(denied.map_err(|r| r.code()), Err(ErrorCode::Forbidden));
    let _ = sent(&mut out);
}
