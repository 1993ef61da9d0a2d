//! Acknowledged delivery: users' inboxes and the queues of acknowledged subscriptions.
//!
//! - A user's inbox ([`Kind::Users`]) is kept by the user's home shard
//!   ([`crate::ids::home_shard`] of the user id). A message sent with `ack` (or `persist`, which
//!   implies it) goes there; each message goes to every connection of the user.
//! - A queue ([`Kind::Queues`]) belongs to an acknowledged subscription: a plain one
//!   (`sub:<conn>@<channel>`, kept by the subscriber's shard, its one holder) or a group
//!   (`group:<group>@<channel>`, kept by the group's home, its members the holders). Each
//!   message goes to one holder: the one with the fewest in flight, in turn; what a holder had
//!   in flight when it leaves goes to another at once.
//!
//! Either way the keeper checks the dedup window and the bounds, has the store write the
//! message when it is persistent (the sender's `ok` waits for the store's confirmation), then
//! delivers it, at most `ack.max_pending` unacknowledged at a time (per user; per holder in a
//! queue), in order. One `ack` removes it; `nak` redelivers it after a delay; `term`
//! dead-letters it. Unacknowledged within `ack.wait_ms`, it is delivered again after the next
//! `ack.backoff_ms` step, carrying `"redelivered":k`; after `ack.max_deliver` deliveries it is
//! dead-lettered, as it is when `inbox.ttl_s` runs out. With no holder connected, nothing is
//! delivered and no attempt is spent.

mod entry;
mod pump;
mod queue;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::config::DeliveryConfig;
use super::counters::InboxCounts;
use super::dedup::Dedup;
use super::effects::Effects;
use super::records::{DeadLetter, DeadReason, Record, StoredMessage};
use super::refusal::Refusal;
use super::requests::{Answer, InboxMessage, Origin, Settle};
use crate::ids::{ConnId, IdMap};
use crate::protocol::frame;
pub(super) use entry::with_field;
use entry::{Entry, Holder, State};

/// Which inboxes these are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Users' inboxes, named by user id: a message goes to every connection of the user.
    Users,
    /// Queues of acknowledged subscriptions, named `sub:…` or `group:…`: a message goes to one
    /// holder. A queue takes messages only once it is opened ([`Inboxes::open`]).
    Queues,
}

impl Kind {
    /// The remainder of its store tokens divided by 8.
    fn tag(self) -> u64 {
        match self {
            Kind::Users => 1,
            Kind::Queues => 2,
        }
    }
}

/// A queue's delivery, or the end of one, that the holder's shard must know of to route the
/// holder's `ack` back to the queue. The broker carries these out ([`Inboxes::take_routes`]).
#[derive(Debug)]
pub(super) enum Route {
    /// Deliver `message` (id `id`, of queue `queue`) to `to`.
    Given {
        to: ConnId,
        id: Arc<str>,
        queue: Arc<str>,
        message: Arc<crate::message::Published>,
    },
    /// Message `id` left its queue (settled, dead or gone): `to` can no longer settle it.
    Taken { to: ConnId, id: Arc<str> },
}

/// A message being written: whose, which, who waits for the `ok`, and its dedup key.
#[derive(Debug)]
struct Storing {
    name: Arc<str>,
    seq: u64,
    origin: Option<Origin>,
    key: Option<Box<str>>,
}

#[derive(Debug, Default)]
struct Inbox {
    entries: BTreeMap<u64, Entry>,
    by_id: HashMap<Arc<str>, u64>,
    /// The entries ready to go now (state `Ready`, its time passed), in order: what a pump
    /// looks at, so that it never walks the ones in flight.
    ready: BTreeSet<u64>,
    /// Unacknowledged deliveries (a user's inbox; a queue counts them per holder).
    in_flight: usize,
    /// The recipients: the user's connections, on every shard; a queue's holders.
    conns: Vec<Holder>,
    /// Where the next pick among holders starts.
    next: usize,
    /// An open queue: it takes messages, and stays while it has none.
    open: bool,
    /// A durable queue: its messages are written to the store.
    durable: bool,
}

/// The inboxes (or queues) this shard keeps.
#[derive(Debug)]
pub(super) struct Inboxes {
    kind: Kind,
    config: DeliveryConfig,
    shard: usize,
    inboxes: HashMap<Arc<str>, Inbox>,
    /// (time, name, seq): an entry's expiry, ack deadline or redelivery time. Stale ones (the
    /// entry is gone or its state changed) are skipped when they come due.
    timers: BTreeSet<(u64, Arc<str>, u64)>,
    next_seq: u64,
    /// Writes waiting for the store's confirmation, by token.
    storing: IdMap<u64, Storing>,
    next_token: u64,
    /// Frame bytes held, against `inbox_max_bytes`, and messages held.
    bytes: usize,
    held: usize,
    counts: InboxCounts,
    dedup: Dedup,
    /// Open durable queues.
    durable: usize,
    /// Queues: the deliveries and their ends, until [`Inboxes::take_routes`].
    routes: Vec<Route>,
}

impl Inboxes {
    pub(super) fn new(kind: Kind, config: DeliveryConfig, shard: usize) -> Self {
        Inboxes {
            kind,
            dedup: Dedup::new(config.dedup_max_entries),
            config,
            shard,
            inboxes: HashMap::new(),
            timers: BTreeSet::new(),
            next_seq: 1,
            storing: IdMap::default(),
            next_token: kind.tag(),
            bytes: 0,
            held: 0,
            counts: InboxCounts::default(),
            durable: 0,
            routes: Vec::new(),
        }
    }

    /// When [`Inboxes::timeout`] must next run.
    pub(super) fn next_timeout(&self) -> Option<u64> {
        self.timers.first().map(|t| t.0)
    }

    /// The queue deliveries made and ended since the last call, for the broker to carry out.
    pub(super) fn take_routes(&mut self) -> std::vec::Drain<'_, Route> {
        self.routes.drain(..)
    }

    /// Where a message for `name` is refused, if it is: the inbox's or all inboxes' bounds.
    fn full(&self, name: &str, inbox: Option<&Inbox>, bytes: usize) -> Option<String> {
        let max = self.config.inbox_max_messages;
        if inbox.is_some_and(|i| i.entries.len() >= max) {
            let what = match self.kind {
                Kind::Users => format!("user {name:?}'s inbox"),
                Kind::Queues => format!("queue {name:?}"),
            };
            Some(format!("{what} holds {max} messages (inbox.max_messages)"))
        } else if self.bytes + bytes > self.config.inbox_max_bytes {
            Some("the inboxes hold inbox.max_bytes; retry later".to_string())
        } else {
            None
        }
    }

    /// Puts `message` in its inbox (whose keeper is this shard). A queue takes it only while
    /// open, and persists it when durable; a message it has no room for is refused to the
    /// sender, or dropped when nobody waits for an answer (a best-effort publish).
    pub(super) fn put(&mut self, message: InboxMessage, now: u64, out: &mut Effects) {
        let InboxMessage {
            user: name,
            id,
            frame,
            priority,
            mut persist,
            msg_id,
            origin,
            not_before,
            from,
        } = message;
        if self.kind == Kind::Queues {
            match self.inboxes.get(&name) {
                Some(inbox) if inbox.open => persist = inbox.durable,
                _ => {
                    let refusal = Refusal::NoQueue(name.as_ref().into());
                    return answer(out, origin, Answer::Refused(refusal));
                }
            }
        }
        let key = msg_id.map(|m| Dedup::key(&self.destination(&name), &m));
        if key.as_deref().is_some_and(|k| self.dedup.seen(k, now)) {
            return answer(out, origin, Answer::Duplicate);
        }
        if let Some(text) = self.full(&name, self.inboxes.get(&name), frame.len()) {
            return answer(out, origin, Answer::Refused(Refusal::InboxFull(text)));
        }
        let inbox = self.inboxes.entry(name.clone()).or_default();
        let seq = self.next_seq;
        self.next_seq += 1;
        let expires_ms = now.saturating_add(self.config.inbox_ttl_ms);
        let entry = Entry {
            id: id.clone(),
            frame,
            priority,
            created_ms: now,
            expires_ms,
            not_before_ms: not_before,
            from,
            attempts: 0,
            given: Vec::new(),
            persisted: persist,
            state: if persist {
                State::Storing
            } else {
                State::Ready { not_before }
            },
        };
        self.bytes += entry.frame.len();
        self.held += 1;
        let stored = persist.then(|| entry.stored());
        inbox.by_id.insert(id, seq);
        inbox.entries.insert(seq, entry);
        self.timers.insert((expires_ms, name.clone(), seq));
        if !persist && not_before > now {
            self.timers.insert((not_before, name.clone(), seq));
        } else if !persist {
            inbox.ready.insert(seq);
        }
        let dedup_expires = now.saturating_add(self.config.dedup_window_ms);
        if let Some(key) = &key {
            self.dedup.insert(key.clone(), dedup_expires, now);
        }
        match stored {
            Some(message) => {
                let mut records = vec![self.put_record(&name, seq, message)];
                if let Some(key) = &key {
                    records.push(Record::Dedup {
                        key: key.clone(),
                        expires_ms: dedup_expires,
                    });
                }
                let token = self.next_token + 8;
                self.next_token = token;
                let storing = Storing {
                    name,
                    seq,
                    origin,
                    key,
                };
                self.storing.insert(token, storing);
                out.persist(Some(token), records);
            }
            None => {
                answer(out, origin, Answer::Ok);
                self.pump(&name, now, out);
            }
        }
    }

    /// The store confirmed (or failed) the write made with `token`.
    pub(super) fn stored(&mut self, token: u64, ok: bool, now: u64, out: &mut Effects) {
        let Some(Storing {
            name,
            seq,
            origin,
            key,
        }) = self.storing.remove(&token)
        else {
            return;
        };
        if ok {
            let mut result = Answer::Ok;
            if let Some(inbox) = self.inboxes.get_mut(&name) {
                if let Some(entry) = inbox.entries.get_mut(&seq) {
                    let not_before = entry.not_before_ms;
                    entry.state = State::Ready { not_before };
                    if not_before > 0 {
                        result = Answer::Scheduled(entry.id.clone());
                    }
                    if not_before > now {
                        self.timers.insert((not_before, name.clone(), seq));
                    } else {
                        inbox.ready.insert(seq);
                    }
                }
            }
            answer(out, origin, result);
            return self.pump(&name, now, out);
        }
        if let Some(key) = key {
            self.dedup.remove(&key);
        }
        self.remove(&name, seq);
        answer(out, origin, Answer::Refused(Refusal::StoreFailed));
    }

    /// A recipient settles message `id` of inbox `name`, which it was delivered.
    pub(super) fn settle(
        &mut self,
        name: &Arc<str>,
        id: &str,
        settle: Settle,
        origin: Origin,
        now: u64,
        out: &mut Effects,
    ) {
        let found = self.inboxes.get(name).and_then(|inbox| {
            let seq = *inbox.by_id.get(id)?;
            let entry = inbox.entries.get(&seq)?;
            // Only what was delivered (or may have been, before a restart) can be settled.
            (entry.attempts > 0).then_some(seq)
        });
        let Some(seq) = found else {
            let refusal = Refusal::UnknownMessage(id.into());
            return out.answer(origin, Answer::Refused(refusal));
        };
        match settle {
            Settle::Ack => {
                if let Some(entry) = self.remove(name, seq) {
                    if entry.persisted {
                        out.persist(None, vec![self.delete_record(name, seq)]);
                    }
                }
            }
            Settle::Nak { delay_ms } => {
                let not_before = now.saturating_add(delay_ms);
                self.make_ready(name, seq, not_before, now);
            }
            Settle::Term { reason } => {
                self.dead_letter(name, seq, DeadReason::Terminated, reason, now, out);
            }
        }
        out.answer(origin, Answer::Ok);
        self.pump(name, now, out);
    }

    /// `by` cancels scheduled message `id` of `user`'s inbox: only its sender, and only before
    /// its first delivery.
    pub(super) fn cancel(
        &mut self,
        user: &Arc<str>,
        id: &str,
        by: Option<Arc<str>>,
        origin: Origin,
        out: &mut Effects,
    ) {
        let found = self.inboxes.get(user).and_then(|inbox| {
            let seq = *inbox.by_id.get(id)?;
            let e = inbox.entries.get(&seq)?;
            let cancellable = e.not_before_ms > 0 && e.attempts == 0 && e.from.is_some();
            (cancellable && e.from == by && e.state != State::Storing).then_some(seq)
        });
        let Some(seq) = found else {
            let refusal = Refusal::UnknownMessage(id.into());
            return out.answer(origin, Answer::Refused(refusal));
        };
        if self.remove(user, seq).is_some_and(|e| e.persisted) {
            out.persist(None, vec![self.delete_record(user, seq)]);
        }
        out.answer(origin, Answer::Ok);
    }

    /// Connection `conn` of user (or holder of queue) `name` is there: it gets what waits.
    pub(super) fn online(&mut self, name: Arc<str>, conn: ConnId, now: u64, out: &mut Effects) {
        let inbox = self.inboxes.entry(name.clone()).or_default();
        if inbox.conns.iter().all(|h| h.id != conn) {
            let holder = Holder {
                id: conn,
                in_flight: 0,
            };
            inbox.conns.push(holder);
        }
        self.pump(&name, now, out);
    }

    /// Connection `conn` of user (or holder of queue) `name` is gone. In a queue, what it had
    /// in flight goes to another holder now; in an inbox, with the user's last connection
    /// gone, what it had not acknowledged waits for the next one. The deliveries made count as
    /// attempts.
    pub(super) fn offline(&mut self, name: &Arc<str>, conn: ConnId, now: u64, out: &mut Effects) {
        let Some(inbox) = self.inboxes.get_mut(name) else {
            return;
        };
        inbox.conns.retain(|h| h.id != conn);
        let last = inbox.conns.is_empty();
        for (&seq, entry) in inbox.entries.iter_mut() {
            let State::InFlight { due, to } = entry.state else {
                continue;
            };
            if to == Some(conn) || (to.is_none() && last) {
                self.timers.remove(&(due, name.clone(), seq));
                entry.state = State::Ready { not_before: 0 };
                inbox.ready.insert(seq);
            }
        }
        if self.kind == Kind::Users && last {
            inbox.in_flight = 0;
        }
        self.pump(name, now, out);
        self.forget_if_empty(name);
    }

    /// Puts back a message read from the store at start (delivered at most once before, maybe,
    /// unless it is scheduled for later than `now`).
    pub(super) fn restore(&mut self, name: Arc<str>, seq: u64, message: StoredMessage, now: u64) {
        let not_before = message.not_before_ms;
        let mut buf = frame::payload_buffer(message.payload.len());
        buf.extend_from_slice(&message.payload);
        let entry = Entry {
            id: message.id.clone(),
            frame: frame::finish(buf, frame::OpCode::Text),
            priority: message.priority,
            created_ms: message.created_ms,
            expires_ms: message.expires_ms,
            not_before_ms: not_before,
            from: message.from,
            attempts: u32::from(not_before <= now),
            given: Vec::new(),
            persisted: true,
            state: State::Ready { not_before },
        };
        self.bytes += entry.frame.len();
        self.held += 1;
        self.timers.insert((message.expires_ms, name.clone(), seq));
        if not_before > now {
            self.timers.insert((not_before, name.clone(), seq));
        }
        let inbox = self.inboxes.entry(name).or_default();
        inbox.by_id.insert(message.id, seq);
        inbox.entries.insert(seq, entry);
        if not_before <= now {
            inbox.ready.insert(seq);
        }
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// Puts back a dedup key read from the store at start.
    pub(super) fn restore_dedup(&mut self, key: Box<str>, expires_ms: u64, now: u64) {
        self.dedup.restore(key, expires_ms, now);
    }

    /// Where `name`'s messages go, as dead letters and dedup keys name it.
    fn destination(&self, name: &str) -> String {
        match self.kind {
            Kind::Users => format!("user:{name}"),
            Kind::Queues => name.to_string(),
        }
    }

    fn put_record(&self, name: &Arc<str>, seq: u64, message: StoredMessage) -> Record {
        let name = name.clone();
        match self.kind {
            Kind::Users => Record::InboxPut {
                user: name,
                seq,
                message,
            },
            Kind::Queues => Record::QueuePut {
                queue: name,
                seq,
                message,
            },
        }
    }

    fn delete_record(&self, name: &Arc<str>, seq: u64) -> Record {
        let name = name.clone();
        match self.kind {
            Kind::Users => Record::InboxDelete { user: name, seq },
            Kind::Queues => Record::QueueDelete { queue: name, seq },
        }
    }

    /// Totals since the start, and (messages, frame bytes) held now.
    pub(super) fn counts(&self) -> (InboxCounts, usize, usize) {
        (self.counts, self.held, self.bytes)
    }

    fn entry_mut(&mut self, name: &str, seq: u64) -> Option<&mut Entry> {
        self.inboxes.get_mut(name)?.entries.get_mut(&seq)
    }

    /// Moves message `seq` to the dead-letter queue.
    fn dead_letter(
        &mut self,
        name: &Arc<str>,
        seq: u64,
        reason: DeadReason,
        detail: Option<Box<str>>,
        now: u64,
        out: &mut Effects,
    ) {
        let Some(entry) = self.remove(name, seq) else {
            return;
        };
        self.counts.dead_letters[reason as usize] += 1;
        let mut records = Vec::with_capacity(2);
        if entry.persisted {
            records.push(self.delete_record(name, seq));
        }
        records.push(Record::DeadLetter(DeadLetter {
            message: entry.stored(),
            destination: self.destination(name).into(),
            reason,
            detail,
            attempts: entry.attempts,
            dead_ms: now,
        }));
        out.persist(None, records);
    }

    /// Takes message `seq` out of inbox `name`.
    fn remove(&mut self, name: &Arc<str>, seq: u64) -> Option<Entry> {
        let inbox = self.inboxes.get_mut(name)?;
        let entry = inbox.entries.remove(&seq)?;
        inbox.by_id.remove(&entry.id);
        inbox.ready.remove(&seq);
        for at in [Some(entry.expires_ms), entry.state.timer()]
            .into_iter()
            .flatten()
        {
            self.timers.remove(&(at, name.clone(), seq));
        }
        if let State::InFlight { to, .. } = entry.state {
            self.landed(name, to);
        }
        for &to in &entry.given {
            let id = entry.id.clone();
            self.routes.push(Route::Taken { to, id });
        }
        self.bytes -= entry.frame.len();
        self.held -= 1;
        self.forget_if_empty(name);
        Some(entry)
    }

    fn forget_if_empty(&mut self, name: &str) {
        if self
            .inboxes
            .get(name)
            .is_some_and(|i| i.entries.is_empty() && i.conns.is_empty() && !i.open)
        {
            self.inboxes.remove(name);
        }
    }
}

/// Answers `origin`, when somebody waits.
pub(super) fn answer(out: &mut Effects, origin: Option<Origin>, result: Answer) {
    if let Some(origin) = origin {
        out.answer(origin, result);
    }
}
