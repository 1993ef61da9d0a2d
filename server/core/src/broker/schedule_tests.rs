//! Scheduled publishes with time passed in: stored before the `ok`, published when due (in
//! order, numbered when channels keep history), cancelled only by their publisher, and put
//! back after a restart.

use std::sync::Arc;

use super::*;
use crate::protocol::Priority;

fn broker(history: usize) -> Broker {
    let history = HistoryConfig {
        size: history,
        ttl_ms: 60_000,
        max_bytes: 1 << 20,
        durable: false,
    };
    super::durable_history_tests::one_shard(history)
}

#[derive(Debug, Default)]
struct Done {
    answers: Vec<(u64, Answer)>,
    /// The frames published, as text.
    published: Vec<String>,
    tokens: Vec<u64>,
    records: Vec<Record>,
}

fn done(out: &mut Effects) -> Done {
    let mut done = Done::default();
    out.drain(|action| match action {
        Action::Answer { origin, answer } => done.answers.push((origin.token, answer)),
        Action::Broadcast { message } => {
            let text = crate::protocol::frame::payload_of(&message.frame);
            done.published
                .push(String::from_utf8(text.to_vec()).unwrap());
        }
        Action::Persist { token, records } => {
            done.tokens.extend(token);
            done.records.extend(records);
        }
        _ => {}
    });
    done
}

fn schedule(b: &mut Broker, n: u64, at: u64, from: &str) -> Done {
    let request = SchedulePublish {
        channel: "news".into(),
        id: format!("m{n}").into(),
        priority: Priority::Normal,
        data: bytes::Bytes::from(format!("{n}")),
        not_before: at,
        from: Some(from.into()),
        origin: Origin { shard: 0, token: n },
    };
    let mut out = Effects::default();
    b.schedule_publish(request, 0, &mut out);
    done(&mut out)
}

fn stored(b: &mut Broker, token: u64, ok: bool) -> Done {
    let mut out = Effects::default();
    b.stored(token, ok, 0, &mut out);
    done(&mut out)
}

fn at(b: &mut Broker, now: u64) -> Done {
    let mut out = Effects::default();
    b.handle_timeout(now, &mut out);
    done(&mut out)
}

fn cancel(b: &mut Broker, id: &str, user: &str) -> Answer {
    let conn = crate::ids::ConnId::new(0, 9);
    let peer = Peer {
        lz4: false,
        user: Some(user.into()),
        permissions: Arc::new(crate::auth::Permissions::all()),
    };
    b.connect(conn, peer);
    let mut out = Effects::default();
    let origin = Origin {
        shard: 0,
        token: 500,
    };
    b.cancel(conn, id, origin, 0, &mut out);
    let answer = done(&mut out).answers.pop().unwrap().1;
    b.disconnect(conn, 0, &mut out);
    answer
}

#[test]
fn a_schedule_is_confirmed_once_stored_and_published_when_due_in_order() {
    let mut b = broker(0);
    let second = schedule(&mut b, 2, 2000, "ann");
    let first = schedule(&mut b, 1, 1000, "ann");
    assert!(first.answers.is_empty(), "no ok before the store");
    assert!(matches!(first.records[0], Record::SchedulePut { .. }));
    let ok = stored(&mut b, first.tokens[0], true);
    assert_eq!(ok.answers, [(1, Answer::Scheduled("m1#news".into()))]);
    stored(&mut b, second.tokens[0], true);
    assert_eq!(b.poll_timeout(), Some(1000));
    assert!(at(&mut b, 999).published.is_empty());
    let due = at(&mut b, 2500);
    assert_eq!(due.published.len(), 2);
    assert!(
        due.published[0].contains(r#""id":"m1""#) && due.published[0].ends_with(r#""data":1}"#)
    );
    assert!(due.published[1].contains(r#""id":"m2""#));
    let deletes = due
        .records
        .iter()
        .filter(|r| matches!(r, Record::ScheduleDelete { .. }));
    assert_eq!(deletes.count(), 2, "deleted once published");
}

#[test]
fn only_the_publisher_cancels_and_only_before_it_is_due() {
    let mut b = broker(0);
    let d = schedule(&mut b, 1, 1000, "ann");
    stored(&mut b, d.tokens[0], true);
    let refused = cancel(&mut b, "m1#news", "bob");
    assert!(matches!(
        refused,
        Answer::Refused(Refusal::UnknownMessage(_))
    ));
    assert_eq!(cancel(&mut b, "m1#news", "ann"), Answer::Ok);
    assert!(at(&mut b, 5000).published.is_empty(), "cancelled");
    let d = schedule(&mut b, 2, 1000, "ann");
    stored(&mut b, d.tokens[0], true);
    at(&mut b, 1000);
    let late = cancel(&mut b, "m2#news", "ann");
    assert!(matches!(late, Answer::Refused(Refusal::UnknownMessage(_))));
}

#[test]
fn a_failed_write_is_refused_and_never_published() {
    let mut b = broker(0);
    let d = schedule(&mut b, 1, 10, "ann");
    let failed = stored(&mut b, d.tokens[0], false);
    assert_eq!(failed.answers, [(1, Answer::Refused(Refusal::StoreFailed))]);
    assert!(at(&mut b, 100).published.is_empty());
}

#[test]
fn a_restored_schedule_already_due_goes_out_at_the_first_timeout() {
    let mut b = broker(0);
    let message = StoredMessage {
        id: "m7#news".into(),
        payload: bytes::Bytes::from_static(b"7"),
        priority: Priority::High,
        created_ms: 1,
        expires_ms: u64::MAX,
        not_before_ms: 50,
        from: Some("ann".into()),
    };
    b.restore_schedule("news".into(), 7, message);
    assert_eq!(b.poll_timeout(), Some(50));
    let due = at(&mut b, 10_000);
    assert_eq!(due.published.len(), 1);
    assert!(due.published[0].contains(r#""priority":"high""#));
    // New schedules do not reuse its seq.
    let d = schedule(&mut b, 8, 20_000, "ann");
    assert!(matches!(d.records[0], Record::SchedulePut { seq: 8, .. }));
}

#[test]
fn with_history_a_due_schedule_is_numbered_first() {
    let mut b = broker(10);
    let d = schedule(&mut b, 1, 10, "ann");
    stored(&mut b, d.tokens[0], true);
    let due = at(&mut b, 10);
    assert_eq!(due.published.len(), 1);
    assert!(
        due.published[0].contains(r#""offset":1"#),
        "{}",
        due.published[0]
    );
}
