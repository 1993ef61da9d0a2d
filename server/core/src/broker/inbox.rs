//! Acknowledged direct messages: every user's inbox, kept by the user's home shard
//! ([`crate::ids::home_shard`] of the user id).
//!
//! A message sent with `ack` (or `persist`, which implies it) goes to the recipient's home. The
//! home checks the dedup window and the inbox's bounds, has the store write it when it is
//! persistent (the sender's `ok` waits for the store's confirmation), then delivers it to every
//! connection of the user, at most `ack.max_pending` unacknowledged at a time, in order. One
//! `ack` from any of them removes it; `nak` redelivers it after a delay; `term` dead-letters it.
//! Unacknowledged within `ack.wait_ms`, it is delivered again after the next `ack.backoff_ms`
//! step, carrying `"redelivered":k`; after `ack.max_deliver` deliveries it is dead-lettered, as
//! it is when `inbox.ttl_s` runs out. While the user has no connection, nothing is delivered and
//! no attempt is spent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use super::config::DeliveryConfig;
use super::dedup::Dedup;
use super::effects::Effects;
use super::messages::ShardMessage;
use super::records::{DeadLetter, DeadReason, Record, StoredMessage};
use super::refusal::Refusal;
use super::requests::{Answer, InboxMessage, Origin, Settle};
use crate::ids::{ConnId, IdMap};
use crate::message::Published;
use crate::protocol::{frame, Priority};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the store's confirmation.
    Storing,
    /// To be delivered once `not_before` has passed and the user is connected.
    Ready { not_before: u64 },
    /// Delivered; acknowledged by `due` or redelivered.
    InFlight { due: u64 },
}

impl State {
    /// The time its timer is set for, if any.
    fn timer(self) -> Option<u64> {
        match self {
            State::Storing | State::Ready { not_before: 0 } => None,
            State::Ready { not_before: at } | State::InFlight { due: at } => Some(at),
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: Arc<str>,
    frame: Bytes,
    priority: Priority,
    created_ms: u64,
    expires_ms: u64,
    /// When it was scheduled for (0: not scheduled).
    not_before_ms: u64,
    from: Option<Arc<str>>,
    /// Deliveries so far (a message restored from the store counts one: it may have been
    /// delivered before the restart).
    attempts: u32,
    persisted: bool,
    state: State,
}

impl Entry {
    fn stored(&self) -> StoredMessage {
        StoredMessage {
            id: self.id.clone(),
            payload: Bytes::copy_from_slice(frame::payload_of(&self.frame)),
            priority: self.priority,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            not_before_ms: self.not_before_ms,
            from: self.from.clone(),
        }
    }

    /// The frame of delivery number `attempts`: the first is the sender's frame, later ones
    /// carry `"redelivered":k`.
    fn frame(&self) -> Bytes {
        if self.attempts <= 1 {
            return self.frame.clone();
        }
        let payload = frame::payload_of(&self.frame);
        let Some((_, head)) = payload.split_last() else {
            return self.frame.clone();
        };
        let tail = format!(",\"redelivered\":{}}}", self.attempts - 1);
        let mut buf = frame::payload_buffer(payload.len() + tail.len());
        buf.extend_from_slice(head);
        buf.extend_from_slice(tail.as_bytes());
        frame::finish(buf, frame::OpCode::Text)
    }
}

/// A message being written: whose, which, who waits for the `ok`, and its dedup key.
#[derive(Debug)]
struct Storing {
    user: Arc<str>,
    seq: u64,
    origin: Origin,
    key: Option<Box<str>>,
}

#[derive(Debug, Default)]
struct UserInbox {
    entries: BTreeMap<u64, Entry>,
    by_id: HashMap<Arc<str>, u64>,
    in_flight: usize,
    /// The user's connections, on every shard.
    conns: Vec<ConnId>,
}

/// The inboxes of the users whose home is this shard.
#[derive(Debug)]
pub(super) struct Inboxes {
    config: DeliveryConfig,
    shard: usize,
    users: HashMap<Arc<str>, UserInbox>,
    /// (time, user, seq): an entry's expiry, ack deadline or redelivery time. Stale ones (the
    /// entry is gone or its state changed) are skipped when they come due.
    timers: BTreeSet<(u64, Arc<str>, u64)>,
    next_seq: u64,
    /// Writes waiting for the store's confirmation, by token.
    storing: IdMap<u64, Storing>,
    next_token: u64,
    /// Frame bytes held, against `inbox_max_bytes`.
    bytes: usize,
    dedup: Dedup,
}

impl Inboxes {
    pub(super) fn new(config: DeliveryConfig, shard: usize) -> Self {
        Inboxes {
            dedup: Dedup::new(config.dedup_max_entries),
            config,
            shard,
            users: HashMap::new(),
            timers: BTreeSet::new(),
            next_seq: 1,
            storing: IdMap::default(),
            next_token: 0,
            bytes: 0,
        }
    }

    /// When [`Inboxes::timeout`] must next run.
    pub(super) fn next_timeout(&self) -> Option<u64> {
        self.timers.first().map(|t| t.0)
    }

    /// Puts `message` in its recipient's inbox (the recipient's home is this shard).
    pub(super) fn put(&mut self, message: InboxMessage, now: u64, out: &mut Effects) {
        let InboxMessage {
            user,
            id,
            frame,
            priority,
            persist,
            msg_id,
            origin,
            not_before,
            from,
        } = message;
        let key = msg_id.map(|m| Dedup::key(&format!("user:{user}"), &m));
        if key.as_deref().is_some_and(|k| self.dedup.seen(k, now)) {
            return out.answer(origin, Answer::Duplicate);
        }
        let inbox = self.users.entry(user.clone()).or_default();
        let max = self.config.inbox_max_messages;
        let full = if inbox.entries.len() >= max {
            Some(format!(
                "user {user:?}'s inbox holds {max} messages (inbox.max_messages)"
            ))
        } else if self.bytes + frame.len() > self.config.inbox_max_bytes {
            Some("the inboxes hold inbox.max_bytes; retry later".to_string())
        } else {
            None
        };
        if let Some(text) = full {
            self.forget_if_empty(&user);
            return out.answer(origin, Answer::Refused(Refusal::InboxFull(text)));
        }
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
            persisted: persist,
            state: if persist {
                State::Storing
            } else {
                State::Ready { not_before }
            },
        };
        self.bytes += entry.frame.len();
        let stored = persist.then(|| entry.stored());
        inbox.by_id.insert(id, seq);
        inbox.entries.insert(seq, entry);
        self.timers.insert((expires_ms, user.clone(), seq));
        if !persist && not_before > now {
            self.timers.insert((not_before, user.clone(), seq));
        }
        let dedup_expires = now.saturating_add(self.config.dedup_window_ms);
        if let Some(key) = &key {
            self.dedup.insert(key.clone(), dedup_expires, now);
        }
        match stored {
            Some(message) => {
                let mut records = vec![Record::InboxPut {
                    user: user.clone(),
                    seq,
                    message,
                }];
                if let Some(key) = &key {
                    records.push(Record::Dedup {
                        key: key.clone(),
                        expires_ms: dedup_expires,
                    });
                }
                self.next_token += 1;
                let token = self.next_token;
                let storing = Storing {
                    user,
                    seq,
                    origin,
                    key,
                };
                self.storing.insert(token, storing);
                out.persist(Some(token), records);
            }
            None => {
                out.answer(origin, Answer::Ok);
                self.pump(&user, now, out);
            }
        }
    }

    /// The store confirmed (or failed) the write made with `token`.
    pub(super) fn stored(&mut self, token: u64, ok: bool, now: u64, out: &mut Effects) {
        let Some(Storing {
            user,
            seq,
            origin,
            key,
        }) = self.storing.remove(&token)
        else {
            return;
        };
        if ok {
            let mut answer = Answer::Ok;
            if let Some(entry) = self.entry_mut(&user, seq) {
                let not_before = entry.not_before_ms;
                entry.state = State::Ready { not_before };
                if not_before > 0 {
                    answer = Answer::Scheduled(entry.id.clone());
                }
                if not_before > now {
                    self.timers.insert((not_before, user.clone(), seq));
                }
            }
            out.answer(origin, answer);
            return self.pump(&user, now, out);
        }
        if let Some(key) = key {
            self.dedup.remove(&key);
        }
        self.remove(&user, seq);
        out.answer(origin, Answer::Refused(Refusal::StoreFailed));
    }

    /// A recipient (connection of `user`) settles message `id`, which it was delivered.
    pub(super) fn settle(
        &mut self,
        user: &Arc<str>,
        id: &str,
        settle: Settle,
        origin: Origin,
        now: u64,
        out: &mut Effects,
    ) {
        let found = self.users.get(user).and_then(|inbox| {
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
                if let Some(entry) = self.remove(user, seq) {
                    if entry.persisted {
                        let delete = Record::InboxDelete {
                            user: user.clone(),
                            seq,
                        };
                        out.persist(None, vec![delete]);
                    }
                }
            }
            Settle::Nak { delay_ms } => {
                let not_before = now.saturating_add(delay_ms);
                self.make_ready(user, seq, not_before);
            }
            Settle::Term { reason } => {
                self.dead_letter(user, seq, DeadReason::Terminated, reason, now, out);
            }
        }
        out.answer(origin, Answer::Ok);
        self.pump(user, now, out);
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
        let found = self.users.get(user).and_then(|inbox| {
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
            let delete = Record::InboxDelete {
                user: user.clone(),
                seq,
            };
            out.persist(None, vec![delete]);
        }
        out.answer(origin, Answer::Ok);
    }

    /// Connection `conn` of `user` opened: it gets what waits.
    pub(super) fn online(&mut self, user: Arc<str>, conn: ConnId, now: u64, out: &mut Effects) {
        self.users.entry(user.clone()).or_default().conns.push(conn);
        self.pump(&user, now, out);
    }

    /// Connection `conn` of `user` closed. With the user's last connection gone, what it had
    /// not acknowledged waits for the next one (the deliveries made count as attempts).
    pub(super) fn offline(&mut self, user: &Arc<str>, conn: ConnId) {
        let Some(inbox) = self.users.get_mut(user) else {
            return;
        };
        inbox.conns.retain(|&c| c != conn);
        if inbox.conns.is_empty() {
            for entry in inbox.entries.values_mut() {
                if let State::InFlight { .. } = entry.state {
                    entry.state = State::Ready { not_before: 0 };
                }
            }
            inbox.in_flight = 0;
        }
        self.forget_if_empty(user);
    }

    /// Handles the deadlines passed at `now`: expiries, ack timeouts, redeliveries.
    pub(super) fn timeout(&mut self, now: u64, out: &mut Effects) {
        let mut touched: Vec<Arc<str>> = Vec::new();
        while let Some((at, _, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let (at, user, seq) = self.timers.pop_first().expect("present");
            let Some(entry) = self.entry_mut(&user, seq) else {
                continue;
            };
            let (state, attempts) = (entry.state, entry.attempts);
            if now >= entry.expires_ms {
                if state != State::Storing {
                    self.dead_letter(&user, seq, DeadReason::Expired, None, now, out);
                }
            } else if state == (State::InFlight { due: at }) {
                if attempts >= self.config.max_deliver {
                    self.dead_letter(&user, seq, DeadReason::MaxDeliver, None, now, out);
                } else {
                    let not_before = now.saturating_add(self.backoff(attempts));
                    self.make_ready(&user, seq, not_before);
                }
            } else if state != (State::Ready { not_before: at }) {
                continue;
            }
            if !touched.contains(&user) {
                touched.push(user);
            }
        }
        for user in touched {
            self.pump(&user, now, out);
        }
    }

    /// Puts back a message read from the store at start (delivered at most once before, maybe,
    /// unless it is scheduled for later than `now`).
    pub(super) fn restore(&mut self, user: Arc<str>, seq: u64, message: StoredMessage, now: u64) {
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
            persisted: true,
            state: State::Ready { not_before },
        };
        self.bytes += entry.frame.len();
        self.timers.insert((message.expires_ms, user.clone(), seq));
        if not_before > now {
            self.timers.insert((not_before, user.clone(), seq));
        }
        let inbox = self.users.entry(user).or_default();
        inbox.by_id.insert(message.id, seq);
        inbox.entries.insert(seq, entry);
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// Puts back a dedup key read from the store at start.
    pub(super) fn restore_dedup(&mut self, key: Box<str>, expires_ms: u64, now: u64) {
        if expires_ms > now {
            self.dedup.insert(key, expires_ms, now);
        }
    }

    /// Delivers what `user` may be sent now: the ready messages, in order, while fewer than
    /// `max_pending` are unacknowledged.
    fn pump(&mut self, user: &Arc<str>, now: u64, out: &mut Effects) {
        let Some(inbox) = self.users.get_mut(user) else {
            return;
        };
        if inbox.conns.is_empty() {
            return;
        }
        let due = now.saturating_add(self.config.wait_ms);
        for (&seq, entry) in inbox.entries.iter_mut() {
            if inbox.in_flight >= self.config.max_pending {
                break;
            }
            match entry.state {
                State::Ready { not_before } if not_before <= now => {}
                _ => continue,
            }
            if let Some(at) = entry.state.timer() {
                self.timers.remove(&(at, user.clone(), seq));
            }
            entry.attempts += 1;
            entry.state = State::InFlight { due };
            inbox.in_flight += 1;
            self.timers.insert((due, user.clone(), seq));
            let frame = entry.frame();
            let message = Arc::new(Published::new(
                "",
                entry.priority,
                frame,
                self.config.lz4_threshold,
            ));
            for &conn in &inbox.conns {
                if conn.shard() == self.shard {
                    out.deliver(&message, [conn]);
                } else {
                    let message = message.clone();
                    out.send_to_shard(conn.shard(), ShardMessage::Deliver { to: conn, message });
                }
            }
        }
    }

    /// The wait before redelivering a message delivered `attempts` times.
    fn backoff(&self, attempts: u32) -> u64 {
        let steps = &self.config.backoff_ms;
        let step = (attempts as usize)
            .saturating_sub(1)
            .min(steps.len().saturating_sub(1));
        steps.get(step).copied().unwrap_or(0)
    }

    fn entry_mut(&mut self, user: &str, seq: u64) -> Option<&mut Entry> {
        self.users.get_mut(user)?.entries.get_mut(&seq)
    }

    /// Makes message `seq` wait until `not_before` (taking it out of flight).
    fn make_ready(&mut self, user: &Arc<str>, seq: u64, not_before: u64) {
        let Some(inbox) = self.users.get_mut(user) else {
            return;
        };
        let Some(entry) = inbox.entries.get_mut(&seq) else {
            return;
        };
        if let State::InFlight { .. } = entry.state {
            inbox.in_flight -= 1;
        }
        if let Some(at) = entry.state.timer() {
            self.timers.remove(&(at, user.clone(), seq));
        }
        entry.state = State::Ready { not_before };
        if not_before > 0 {
            self.timers.insert((not_before, user.clone(), seq));
        }
    }

    /// Moves message `seq` to the dead-letter queue.
    fn dead_letter(
        &mut self,
        user: &Arc<str>,
        seq: u64,
        reason: DeadReason,
        detail: Option<Box<str>>,
        now: u64,
        out: &mut Effects,
    ) {
        let Some(entry) = self.remove(user, seq) else {
            return;
        };
        let mut records = Vec::with_capacity(2);
        if entry.persisted {
            records.push(Record::InboxDelete {
                user: user.clone(),
                seq,
            });
        }
        records.push(Record::DeadLetter(DeadLetter {
            message: entry.stored(),
            destination: format!("user:{user}").into(),
            reason,
            detail,
            attempts: entry.attempts,
            dead_ms: now,
        }));
        out.persist(None, records);
    }

    /// Takes message `seq` out of `user`'s inbox.
    fn remove(&mut self, user: &Arc<str>, seq: u64) -> Option<Entry> {
        let inbox = self.users.get_mut(user)?;
        let entry = inbox.entries.remove(&seq)?;
        inbox.by_id.remove(&entry.id);
        for at in [Some(entry.expires_ms), entry.state.timer()]
            .into_iter()
            .flatten()
        {
            self.timers.remove(&(at, user.clone(), seq));
        }
        if let State::InFlight { .. } = entry.state {
            inbox.in_flight -= 1;
        }
        self.bytes -= entry.frame.len();
        self.forget_if_empty(user);
        Some(entry)
    }

    fn forget_if_empty(&mut self, user: &str) {
        if self
            .users
            .get(user)
            .is_some_and(|i| i.entries.is_empty() && i.conns.is_empty())
        {
            self.users.remove(user);
        }
    }
}
