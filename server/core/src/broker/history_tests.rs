//! Channel history with time passed in: offsets and epochs, the position a subscribe learns,
//! recovery all or nothing, `history` reads, and what is forgotten when.

use std::sync::Arc;

use super::*;
use crate::auth::Permissions;
use crate::protocol::Priority;

const TTL: u64 = 10_000;

fn broker(shard: usize, shards: usize, size: usize) -> Broker {
    Broker::new(BrokerConfig {
        shard,
        shards,
        presence_max_users: 10,
        max_subscriptions: 4,
        max_batch_bytes: 1000,
        delivery: DeliveryConfig::default(),
        history: HistoryConfig {
            size,
            ttl_ms: TTL,
            max_bytes: 1 << 20,
            durable: false,
        },
        boot: 0xab,
    })
}

fn peer() -> Peer {
    Peer {
        lz4: false,
        user: None,
        permissions: Arc::new(Permissions::all()),
    }
}

/// What the effects did.
#[derive(Debug, Default)]
struct Done {
    /// (connection, offset) of each delivery.
    delivered: Vec<(ConnId, u64)>,
    answers: Vec<(u64, Answer)>,
    broadcast: Vec<Arc<Published>>,
}

fn done(out: &mut Effects) -> Done {
    let mut done = Done::default();
    out.drain(|action| match action {
        Action::Deliver { message, to } => {
            let text = std::str::from_utf8(crate::protocol::frame::payload_of(&message.frame));
            let json: serde_json::Value = serde_json::from_str(text.unwrap()).unwrap();
            let offset = json["offset"].as_u64().unwrap();
            done.delivered.extend(to.iter().map(|&c| (c, offset)));
        }
        Action::Answer { origin, answer } => done.answers.push((origin.token, answer)),
        Action::Broadcast { message } => done.broadcast.push(message),
        _ => {}
    });
    done
}

fn publish(b: &mut Broker, n: u64, now: u64) -> Done {
    let mut out = Effects::default();
    let message = Sequence {
        channel: "room".into(),
        id: format!("m{n}").into(),
        priority: Priority::Normal,
        data: bytes::Bytes::from(format!("{n}")),
        msg_id: None,
        origin: Origin { shard: 0, token: n },
        born_us: 0,
    };
    b.publish_sequenced(message, now, &mut out);
    let mut d = done(&mut out);
    // The shard publishes what its broker numbered, as the server does.
    for message in std::mem::take(&mut d.broadcast) {
        b.publish(&message, false, &mut out);
        d.broadcast.push(message);
        d.delivered.extend(done(&mut out).delivered);
    }
    d
}

fn subscribe(b: &mut Broker, conn: ConnId, since: Option<(&str, u64)>, now: u64) -> Done {
    let mut out = Effects::default();
    let since = since.map(|(epoch, offset)| Position {
        epoch: epoch.into(),
        offset,
    });
    let query = HistoryQuery {
        channel: "room".into(),
        since,
        limit: usize::MAX,
        subscribe: Some((conn, false)),
        origin: Origin {
            shard: 0,
            token: 99,
        },
    };
    b.ask_history(conn, query, now, &mut out).unwrap();
    done(&mut out)
}

fn position(d: &Done) -> (Arc<str>, u64, Option<bool>) {
    match &d.answers.last().unwrap().1 {
        Answer::Position {
            epoch,
            offset,
            recovered,
        } => (epoch.clone(), *offset, *recovered),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_subscribe_learns_the_position_even_before_any_message() {
    let mut b = broker(0, 1, 10);
    b.connect(ConnId::new(0, 1), peer());
    let (epoch, offset, recovered) = position(&subscribe(&mut b, ConnId::new(0, 1), None, 0));
    assert_eq!((offset, recovered), (0, None));
    // The first message continues that epoch, at offset 1, and the subscriber gets it.
    let d = publish(&mut b, 1, 1);
    assert_eq!(d.delivered, vec![(ConnId::new(0, 1), 1)]);
    assert_eq!(d.answers, vec![(1, Answer::Ok)]);
    let (again, offset, _) = position(&subscribe(&mut b, ConnId::new(0, 1), None, 2));
    assert_eq!((again, offset), (epoch, 1));
}

#[test]
fn recovery_delivers_everything_after_since_in_order_or_nothing() {
    let mut b = broker(0, 1, 3);
    let late = ConnId::new(0, 1);
    b.connect(late, peer());
    for n in 1..=5 {
        publish(&mut b, n, n);
    }
    let epoch = b.history.read("room", None, 1, 5).epoch;
    // Kept: 3, 4, 5 (size 3). Since 2: all of 3..5, in order, then live.
    let d = subscribe(&mut b, late, Some((&epoch, 2)), 6);
    assert_eq!(d.delivered, vec![(late, 3), (late, 4), (late, 5)]);
    assert_eq!(position(&d), (epoch.clone(), 5, Some(true)));
    assert_eq!(publish(&mut b, 6, 7).delivered, vec![(late, 6)]);
    // Since 1: message 2 is gone, so nothing is replayed (never a part).
    let other = ConnId::new(0, 2);
    b.connect(other, peer());
    let d = subscribe(&mut b, other, Some((&epoch, 1)), 8);
    assert!(d.delivered.is_empty());
    assert_eq!(position(&d).2, Some(false));
    // Another epoch, or an offset from the future: nothing either.
    for since in [("other", 5), (&*epoch, 99)] {
        let d = subscribe(&mut b, other, Some(since), 9);
        assert!(d.delivered.is_empty());
        assert_eq!(position(&d).2, Some(false), "{since:?}");
    }
    // Up to date: recovered, nothing to replay.
    let d = subscribe(&mut b, other, Some((&epoch, 6)), 9);
    assert_eq!((d.delivered.len(), position(&d).2), (0, Some(true)));
}

#[test]
fn history_reads_the_last_messages_or_those_after_since() {
    let mut b = broker(0, 1, 10);
    let reader = ConnId::new(0, 1);
    b.connect(reader, peer());
    for n in 1..=4 {
        publish(&mut b, n, n);
    }
    let read = |b: &mut Broker, since: Option<Position>, limit| {
        let mut out = Effects::default();
        let query = HistoryQuery {
            channel: "room".into(),
            since,
            limit,
            subscribe: None,
            origin: Origin { shard: 0, token: 5 },
        };
        b.ask_history(reader, query, 10, &mut out).unwrap();
        match done(&mut out).answers.pop().unwrap().1 {
            Answer::History { read, .. } => read,
            other => panic!("{other:?}"),
        }
    };
    let offsets = |r: &Read| r.messages.len();
    let last_two = read(&mut b, None, 2);
    assert_eq!(
        (offsets(&last_two), last_two.offset, last_two.recovered),
        (2, 4, None)
    );
    let since = Position {
        epoch: last_two.epoch.to_string().into(),
        offset: 1,
    };
    let after = read(&mut b, Some(since), 10);
    assert_eq!((offsets(&after), after.recovered), (3, Some(true)));
    assert_eq!(b.counters().recoveries, [1, 0]);
}

#[test]
fn messages_expire_after_the_ttl_and_a_forgotten_channel_starts_a_new_epoch() {
    let mut b = broker(0, 1, 10);
    let (sub, late) = (ConnId::new(0, 1), ConnId::new(0, 2));
    b.connect(sub, peer());
    b.connect(late, peer());
    let (epoch, _, _) = position(&subscribe(&mut b, sub, None, 0));
    publish(&mut b, 1, 0);
    let mut out = Effects::default();
    b.handle_timeout(TTL, &mut out);
    // Expired: a recovery from before it is refused; the epoch stays (it has a subscriber).
    let d = subscribe(&mut b, late, Some((&epoch, 0)), TTL + 1);
    assert_eq!(position(&d), (epoch.clone(), 1, Some(false)));
    assert_eq!(b.counters().recoveries, [0, 1]);
    b.handle_timeout(10 * TTL, &mut out);
    assert_eq!(position(&subscribe(&mut b, late, None, 10 * TTL)).0, epoch);
    // Forgotten once it has had neither messages nor subscribers for the ttl.
    b.disconnect(sub, 10 * TTL, &mut out);
    b.disconnect(late, 10 * TTL, &mut out);
    b.handle_timeout(30 * TTL, &mut out);
    let other = ConnId::new(0, 3);
    b.connect(other, peer());
    let (new_epoch, offset, _) = position(&subscribe(&mut b, other, None, 30 * TTL));
    assert!(new_epoch != epoch && offset == 0);
}

#[test]
fn the_home_numbers_and_broadcasts_and_the_answer_subscribes_on_the_asking_shard() {
    // Two shards: the channel's home numbers every message and sends it on; a subscribe on the
    // other shard is answered through it.
    let home = super::presence::home("room", 2);
    let away = 1 - home;
    let mut h = broker(home, 2, 10);
    let d = publish(&mut h, 1, 0);
    assert_eq!(d.broadcast.len(), 1, "sent on");
    let mut a = broker(away, 2, 10);
    let conn = ConnId::new(away, 1);
    a.connect(conn, peer());
    let mut out = Effects::default();
    let query = HistoryQuery {
        channel: "room".into(),
        since: None,
        limit: usize::MAX,
        subscribe: Some((conn, false)),
        origin: Origin {
            shard: away,
            token: 3,
        },
    };
    a.ask_history(conn, query, 1, &mut out).unwrap();
    let mut query = None;
    out.drain(|action| {
        if let Action::ToShard { shard, message } = action {
            assert_eq!(shard, home);
            query = Some(message);
        }
    });
    let mut out = Effects::default();
    h.receive(query.unwrap(), 1, &mut out);
    let mut reply = None;
    out.drain(|action| {
        if let Action::ToShard { shard, message } = action {
            assert_eq!(shard, away);
            reply = Some(message);
        }
    });
    let mut out = Effects::default();
    a.receive(reply.unwrap(), 1, &mut out);
    let d = done(&mut out);
    assert_eq!(d.answers.len(), 1);
    assert_eq!(position(&d).1, 1);
}

#[test]
fn channels_without_messages_or_subscribers_are_bounded_by_max_bytes() {
    let mut b = Broker::new(BrokerConfig {
        history: HistoryConfig {
            size: 10,
            ttl_ms: TTL,
            max_bytes: 4 * 256,
            durable: false,
        },
        ..broker(0, 1, 10).config
    });
    let reader = ConnId::new(0, 1);
    b.connect(reader, peer());
    for n in 0..100 {
        let mut out = Effects::default();
        let query = HistoryQuery {
            channel: format!("c{n}").into(),
            since: None,
            limit: 1,
            subscribe: None,
            origin: Origin { shard: 0, token: n },
        };
        b.ask_history(reader, query, 0, &mut out).unwrap();
    }
    assert!(b.history.channels() <= 4, "{}", b.history.channels());
}

#[test]
fn a_repeated_msg_id_is_published_once_with_or_without_history() {
    for size in [0, 10] {
        let mut b = broker(0, 1, size);
        let mut answers = Vec::new();
        let mut published = 0;
        for token in [1, 2] {
            let mut out = Effects::default();
            let message = Sequence {
                channel: "room".into(),
                id: format!("m{token}").into(),
                priority: Priority::Normal,
                data: bytes::Bytes::from_static(b"1"),
                msg_id: Some("same".into()),
                origin: Origin { shard: 0, token },
                born_us: 0,
            };
            b.publish_sequenced(message, 5, &mut out);
            let d = done(&mut out);
            published += d.broadcast.len();
            answers.extend(d.answers);
        }
        assert_eq!(published, 1, "history size {size}");
        assert_eq!(answers, [(1, Answer::Ok), (2, Answer::Duplicate)]);
    }
}
