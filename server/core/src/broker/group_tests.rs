//! Queue groups across several shards' brokers, without sockets: the brokers hand each other
//! their [`ShardMessage`]s as the shards' mailboxes would.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::auth::Permissions;
use crate::protocol::frame::{self, OpCode};
use crate::protocol::Balance;
use crate::protocol::Priority;

/// Several shards' brokers and what each connection received.
pub(super) struct Cluster {
    pub(super) brokers: Vec<Broker>,
    pub(super) received: HashMap<ConnId, Vec<String>>,
    /// The tokens answered, and the answers.
    pub(super) joined: Vec<u64>,
    pub(super) results: Vec<(u64, Answer)>,
    answers: Vec<(u64, Snapshot)>,
    /// What the brokers asked the store to keep, and the writes awaiting confirmation.
    pub(super) records: Vec<Record>,
    pub(super) storing: Vec<(usize, u64)>,
    pub(super) now: u64,
}

impl Cluster {
    pub(super) fn new(shards: usize) -> Self {
        Self::with(shards, DeliveryConfig::default())
    }

    pub(super) fn with(shards: usize, delivery: DeliveryConfig) -> Self {
        let brokers = (0..shards)
            .map(|shard| {
                Broker::new(BrokerConfig {
                    shard,
                    shards,
                    presence_max_users: 10,
                    max_subscriptions: 8,
                    max_batch_bytes: 1 << 20,
                    delivery: delivery.clone(),
                    history: Default::default(),
                    boot: 0,
                })
            })
            .collect();
        Cluster {
            brokers,
            received: HashMap::new(),
            joined: Vec::new(),
            results: Vec::new(),
            answers: Vec::new(),
            records: Vec::new(),
            storing: Vec::new(),
            now: 0,
        }
    }

    pub(super) fn connect(&mut self, id: ConnId) {
        self.connect_as(id, None);
    }

    fn connect_as(&mut self, id: ConnId, user: Option<&str>) {
        let peer = Peer {
            lz4: false,
            user: user.map(Arc::from),
            permissions: Arc::new(Permissions::all()),
        };
        self.brokers[id.shard()].connect(id, peer);
    }

    fn presence(&mut self, shard: usize, channel: &str) -> Snapshot {
        self.on(shard, |b, out| b.query_presence(channel, 42, out));
        let (token, snapshot) = self.answers.pop().expect("an answer");
        assert_eq!(token, 42);
        snapshot
    }

    /// Runs `call` on shard `shard`'s broker, then delivers every cross-shard message until none
    /// is left.
    pub(super) fn on(&mut self, shard: usize, call: impl FnOnce(&mut Broker, &mut Effects)) {
        let mut out = Effects::default();
        call(&mut self.brokers[shard], &mut out);
        let mut queue = Vec::new();
        self.collect(shard, &mut out, &mut queue);
        while let Some((to, message)) = queue.pop() {
            self.brokers[to].receive(message, self.now, &mut out);
            self.collect(to, &mut out, &mut queue);
        }
    }

    /// The store confirms every write waiting for it.
    pub(super) fn confirm_stores(&mut self) {
        let now = self.now;
        for (shard, token) in std::mem::take(&mut self.storing) {
            self.on(shard, |b, out| b.stored(token, true, now, out));
        }
    }

    fn collect(&mut self, shard: usize, out: &mut Effects, queue: &mut Vec<(usize, ShardMessage)>) {
        out.drain(|action| match action {
            Action::Deliver { message, to } => {
                let text = String::from_utf8(frame::payload_of(&message.frame).to_vec()).unwrap();
                for id in to {
                    self.received.entry(*id).or_default().push(text.clone());
                }
            }
            Action::ToShard { shard, message } => queue.insert(0, (shard, message)),
            Action::Answer { origin, answer } => {
                self.joined.push(origin.token);
                self.results.push((origin.token, answer));
            }
            Action::Presence { token, snapshot } => self.answers.push((token, snapshot)),
            Action::Persist { token, records } => {
                self.storing.extend(token.map(|t| (shard, t)));
                self.records.extend(records);
            }
            Action::Frames { .. } | Action::Arm | Action::Broadcast { .. } => {}
        });
    }

    pub(super) fn publish(&mut self, shard: usize, channel: &str, text: &str) {
        let frame = frame::encode(OpCode::Text, text.as_bytes());
        let message = Arc::new(Published::new(channel, Priority::Normal, frame, usize::MAX));
        let now = self.now;
        // Every shard gets every publish.
        for s in 0..self.brokers.len() {
            self.on(s, |b, out| {
                b.publish(&message, false, out);
                b.route_queued(&message, None, now, out);
            });
        }
        let _ = shard;
    }

    /// Runs every broker's deadlines passed at `now`.
    pub(super) fn advance(&mut self, now: u64) {
        self.now = now;
        for s in 0..self.brokers.len() {
            self.on(s, |b, out| b.handle_timeout(now, out));
        }
    }

    pub(super) fn count(&self, id: ConnId) -> usize {
        self.received.get(&id).map_or(0, Vec::len)
    }
}

pub(super) fn key(channel: &str, group: &str) -> GroupKey {
    GroupKey {
        channel: channel.into(),
        group: group.into(),
    }
}

fn join(c: &mut Cluster, id: ConnId, k: &GroupKey, balance: Balance, token: u64) {
    let load = Arc::new(Load::default());
    let k = k.clone();
    c.on(id.shard(), |b, out| {
        b.join_group(id, k, balance, &load, token, None, 0, out)
            .unwrap()
    });
}

#[test]
fn each_message_goes_to_exactly_one_member_of_each_group_wherever_they_live() {
    let mut c = Cluster::new(3);
    let workers = key("tasks", "workers");
    let auditors = key("tasks", "audit");
    let members: Vec<ConnId> = (0..9).map(|n| ConnId::new(n % 3, n as u64)).collect();
    for (n, &id) in members.iter().enumerate() {
        c.connect(id);
        join(&mut c, id, &workers, Balance::RoundRobin, n as u64);
    }
    let auditor = ConnId::new(2, 100);
    c.connect(auditor);
    join(&mut c, auditor, &auditors, Balance::LeastLoaded, 99);
    // Every join was answered, through the home wherever it is.
    c.joined.sort();
    assert_eq!(c.joined, (0..9).chain([99]).collect::<Vec<u64>>());
    for n in 0..900 {
        c.publish(n % 3, "tasks", &format!("t{n}"));
    }
    let shares: Vec<usize> = members.iter().map(|&id| c.count(id)).collect();
    assert_eq!(
        shares.iter().sum::<usize>(),
        900,
        "each task once: {shares:?}"
    );
    assert!(
        shares.iter().all(|&n| n == 100),
        "round robin is even: {shares:?}"
    );
    assert_eq!(c.count(auditor), 900, "the other group gets every task too");
    let mut all: Vec<&String> = members.iter().flat_map(|id| &c.received[id]).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 900, "no task twice");
}

#[test]
fn a_member_that_leaves_or_disconnects_gets_nothing_more_and_nothing_is_lost() {
    let mut c = Cluster::new(2);
    let k = key("jobs.*", "g");
    let (a, b) = (ConnId::new(0, 1), ConnId::new(1, 2));
    for (n, id) in [a, b].into_iter().enumerate() {
        c.connect(id);
        join(&mut c, id, &k, Balance::RoundRobin, n as u64);
    }
    for n in 0..10 {
        c.publish(0, "jobs.x", &format!("{n}"));
    }
    assert_eq!((c.count(a), c.count(b)), (5, 5));
    let kk = k.clone();
    c.on(0, |broker, out| broker.leave_group(a, kk, 0, out).unwrap());
    for n in 0..10 {
        c.publish(1, "jobs.y", &format!("{n}"));
    }
    assert_eq!((c.count(a), c.count(b)), (5, 15));
    c.on(1, |broker, out| broker.disconnect(b, 0, out));
    c.publish(0, "jobs.z", "nobody");
    assert_eq!((c.count(a), c.count(b)), (5, 15), "no member: no delivery");
    // Pattern groups match by token; other channels do not reach them.
    let again = ConnId::new(1, 3);
    c.connect(again);
    join(&mut c, again, &k, Balance::RoundRobin, 7);
    c.publish(0, "jobs.x.deeper", "no");
    c.publish(0, "jobs.w", "yes");
    assert_eq!(c.received[&again], ["yes"]);
}

#[test]
fn a_message_in_flight_to_a_member_that_left_goes_to_another() {
    let mut c = Cluster::new(2);
    let k = key("q", "g");
    // Find a group key whose home is shard 0, so the departing member (shard 1) is remote.
    let k = (0..64)
        .map(|n| key("q", &format!("g{n}")))
        .find(|k| k.home(2) == 0)
        .unwrap_or(k);
    let (local, remote) = (ConnId::new(0, 1), ConnId::new(1, 1));
    c.connect(local);
    c.connect(remote);
    join(&mut c, remote, &k, Balance::RoundRobin, 1);
    join(&mut c, local, &k, Balance::RoundRobin, 2);
    // The home picks `remote` (first in turn) and sends the message to shard 1; before shard 1
    // reads it, the member leaves there.
    let frame = frame::encode(OpCode::Text, b"job");
    let message = Arc::new(Published::new("q", Priority::Normal, frame, usize::MAX));
    let mut out = Effects::default();
    c.brokers[0].publish(&message, false, &mut out);
    let mut in_flight = Vec::new();
    out.drain(|action| {
        if let Action::ToShard { shard, message } = action {
            in_flight.push((shard, message));
        }
    });
    assert_eq!(in_flight.len(), 1);
    let kk = k.clone();
    c.on(1, |b, out| b.leave_group(remote, kk, 0, out).unwrap());
    let (shard, message) = in_flight.pop().unwrap();
    c.on(shard, |b, out| b.receive(message, 0, out));
    assert_eq!(
        (c.count(remote), c.count(local)),
        (0, 1),
        "retried at the home"
    );
}

#[test]
fn least_loaded_prefers_the_emptiest_member_and_round_robins_ties() {
    let mut c = Cluster::new(1);
    let k = key("work", "g");
    let ids: Vec<ConnId> = (0..3).map(|n| ConnId::new(0, n)).collect();
    let loads: Vec<Arc<Load>> = ids.iter().map(|_| Arc::new(Load::default())).collect();
    for (n, (&id, load)) in ids.iter().zip(&loads).enumerate() {
        c.connect(id);
        let k = k.clone();
        c.on(0, |b, out| {
            b.join_group(id, k, Balance::LeastLoaded, load, n as u64, None, 0, out)
                .unwrap()
        });
    }
    // Equal loads: in turn.
    for n in 0..3 {
        c.publish(0, "work", &format!("{n}"));
    }
    assert!(ids.iter().all(|&id| c.count(id) == 1));
    // Member 0 and 2 are backed up: member 1 takes the next ones.
    loads[0].set_queued(10_000);
    loads[2].set_queued(5_000);
    for n in 0..4 {
        c.publish(0, "work", &format!("x{n}"));
    }
    assert_eq!(c.count(ids[1]), 5);
}

#[test]
fn presence_counts_connections_and_users_on_every_shard_and_tells_watchers() {
    let mut c = Cluster::new(3);
    let watcher = ConnId::new(2, 1);
    c.connect_as(watcher, Some("watcher"));
    c.on(2, |b, out| b.subscribe(watcher, "room", true, out).unwrap());
    let people = [
        (ConnId::new(0, 1), Some("ann")),
        (ConnId::new(1, 1), Some("ann")),
        (ConnId::new(1, 2), Some("bo")),
        (ConnId::new(0, 2), None),
    ];
    for (id, user) in people {
        c.connect_as(id, user);
        c.on(id.shard(), |b, out| {
            b.subscribe(id, "room", false, out).unwrap()
        });
    }
    // A pattern subscription does not count.
    let pattern = ConnId::new(0, 3);
    c.connect_as(pattern, Some("pat"));
    c.on(0, |b, out| b.subscribe(pattern, "*", false, out).unwrap());
    for shard in 0..3 {
        let s = c.presence(shard, "room");
        assert_eq!(s.connections, 5, "watcher, ann twice, bo, anonymous");
        assert_eq!(s.users, [Arc::from("ann"), "bo".into(), "watcher".into()]);
        assert!(!s.truncated);
    }
    // The watcher saw its own join and the four others, in order, with connection ids.
    let events = &c.received[&watcher];
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events[1].contains(r#""op":"join""#) && events[1].contains(r#""user":"ann""#));
    assert!(events[4].contains(r#""user":null"#) && events[4].contains(r#""connection":"0-2""#));
    // Leaving and disconnecting are told too; ann stays while one connection remains.
    let (ann0, bo) = (people[0].0, people[2].0);
    c.on(0, |b, out| b.unsubscribe(ann0, "room", out).unwrap());
    c.on(1, |b, out| b.disconnect(bo, 0, out));
    let s = c.presence(1, "room");
    assert_eq!((s.connections, s.users.len()), (3, 2));
    let events = &c.received[&watcher];
    assert!(events[5].contains(r#""op":"leave""#) && events[6].contains(r#""user":"bo""#));
    // Beyond presence_max_users (10 here), the list is cut and says so.
    for n in 0..12 {
        let id = ConnId::new(n % 3, 100 + n as u64);
        c.connect_as(id, Some(&format!("u{n:02}")));
        c.on(id.shard(), |b, out| {
            b.subscribe(id, "room", false, out).unwrap()
        });
    }
    let s = c.presence(0, "room");
    assert_eq!((s.connections, s.users.len(), s.truncated), (15, 10, true));
    assert_eq!(c.presence(0, "empty").connections, 0);
}

#[test]
fn a_presence_query_on_the_home_shard_waits_behind_the_joins_queued_there() {
    let mut c = Cluster::new(2);
    let home = presence::home("room", 2);
    let other = 1 - home;
    let ann = ConnId::new(other, 1);
    c.connect_as(ann, Some("ann"));
    // Ann's subscribe is confirmed on her shard; her join is still in the home's mailbox.
    let mut out = Effects::default();
    c.brokers[other]
        .subscribe(ann, "room", false, &mut out)
        .unwrap();
    let mut queued = Vec::new();
    c.collect(other, &mut out, &mut queued);
    assert!(matches!(queued[..], [(to, ShardMessage::PresenceJoin { .. })] if to == home));
    // A query made on the home shard now is queued behind the join, not answered from a
    // snapshot without it.
    c.brokers[home].query_presence("room", 42, &mut out);
    c.collect(home, &mut out, &mut queued);
    assert!(c.answers.is_empty(), "answered before the join was applied");
    while let Some((to, message)) = queued.pop() {
        c.brokers[to].receive(message, 0, &mut out);
        c.collect(to, &mut out, &mut queued);
    }
    let (token, snapshot) = c.answers.pop().expect("an answer");
    assert_eq!((token, snapshot.connections), (42, 1));
}
