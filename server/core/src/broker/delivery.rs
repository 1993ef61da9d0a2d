//! The broker's side of acknowledged delivery: connections announced to their user's home,
//! messages routed to the inbox there, settles, the store's confirmations and the deadlines,
//! and what it counts for the metrics.
//! The rules themselves are in [`super::inbox`].

use std::sync::Arc;

use super::counters::Counters;
use super::effects::Effects;
use super::messages::ShardMessage;
use super::records::StoredMessage;
use super::refusal::Refusal;
use super::requests::{Answer, InboxMessage, Origin, Settle};
use super::Broker;
use crate::ids::ConnId;

impl Broker {
    /// Connection `id` (a protocol connection, welcomed) is ready for its user's messages: its
    /// user's home delivers what waits in the inbox.
    pub fn announce(&mut self, id: ConnId, now: u64, out: &mut Effects) {
        if let Some(user) = self.conns.get(id).and_then(|c| c.peer.user.clone()) {
            let online = ShardMessage::Online {
                user: user.clone(),
                conn: id,
            };
            self.tell_user_home(&user, online, now, out);
        }
    }

    /// Hands `message` to `user`'s home shard's broker (this one, or through the mailboxes).
    pub(super) fn tell_user_home(
        &mut self,
        user: &str,
        message: ShardMessage,
        now: u64,
        out: &mut Effects,
    ) {
        let home = Self::user_home(user, self.config.shards);
        self.tell(home, message, now, out);
    }

    /// Puts `message` in its recipient's inbox, at the recipient's home; the sender (`origin`)
    /// is answered from there.
    pub fn send_to_inbox(&mut self, message: InboxMessage, now: u64, out: &mut Effects) {
        let user = message.user.clone();
        self.tell_user_home(&user, ShardMessage::InboxPut(Box::new(message)), now, out);
    }

    /// Connection `id` settles message `msg` (an ack, nak or term); answered to `origin` by the
    /// home of the connection's user.
    pub fn settle(
        &mut self,
        id: ConnId,
        msg: &str,
        settle: Settle,
        origin: Origin,
        now: u64,
        out: &mut Effects,
    ) {
        let Err(settle) = self.settle_queued(id, msg, settle, origin, now, out) else {
            return;
        };
        let Some(user) = self.conns.get(id).and_then(|c| c.peer.user.clone()) else {
            let refusal = Refusal::UnknownMessage(msg.into());
            return out.answer(origin, Answer::Refused(refusal));
        };
        let settle = ShardMessage::Settle {
            user: user.clone(),
            id: msg.into(),
            settle,
            origin,
        };
        self.tell_user_home(&user, settle, now, out);
    }

    /// The store wrote (`ok`) or failed to write what was persisted with `token`.
    pub fn stored(&mut self, token: u64, ok: bool, now: u64, out: &mut Effects) {
        if self.inboxes.owns_token(token) {
            self.inboxes.stored(token, ok, now, out);
        } else if self.queues.owns_token(token) {
            self.queues.stored(token, ok, now, out);
            self.carry_routes(out);
        } else if token % 8 == 3 {
            self.history_stored(token, ok, now, out);
        } else {
            self.schedule_stored(token, ok, out);
        }
    }

    /// When [`Broker::handle_timeout`] must next be called (unix milliseconds), if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        let history = self.history.next_timeout();
        let queues = self.queues.next_timeout();
        let schedules = self.schedules.next_timeout();
        let inboxes = self.inboxes.next_timeout();
        let all = inboxes.into_iter().chain(queues).chain(schedules);
        all.chain(history).min()
    }

    /// Acts on the deadlines passed at `now`: ack timeouts, redeliveries, expiries.
    pub fn handle_timeout(&mut self, now: u64, out: &mut Effects) {
        self.publish_due(now, out);
        self.inboxes.timeout(now, out);
        self.queues.timeout(now, out);
        self.carry_routes(out);
        let presence = &self.presence;
        self.history.expire(now, |channel| presence.has(channel));
        self.delete_dropped(out);
    }

    /// Puts back an inbox message read from the store at start (its user's home is this shard).
    pub fn restore_inbox(&mut self, user: Arc<str>, seq: u64, message: StoredMessage, now: u64) {
        self.inboxes.restore(user, seq, message, now);
    }

    /// Connection `id` cancels scheduled message `scheduled` (`<message id>:<user>` for a send,
    /// `<message id>#<channel>` for a publish, as its `ok` said); answered to `origin` by the
    /// user's (the channel's) home.
    pub fn cancel(
        &mut self,
        id: ConnId,
        scheduled: &str,
        origin: Origin,
        now: u64,
        out: &mut Effects,
    ) {
        let by = self.conns.get(id).and_then(|c| c.peer.user.clone());
        // A message id has neither `:` nor `#`: what follows the first names where it waits.
        let at = scheduled.find([':', '#']).filter(|_| by.is_some());
        let Some(at) = at else {
            let refusal = Refusal::UnknownMessage(scheduled.into());
            return out.answer(origin, Answer::Refused(refusal));
        };
        let (separator, rest) = (&scheduled[at..at + 1], &scheduled[at + 1..]);
        if separator == "#" {
            let home = Self::channel_home(rest, self.config.shards);
            let cancel = ShardMessage::CancelScheduled {
                channel: rest.into(),
                id: scheduled.into(),
                by,
                origin,
            };
            return self.tell(home, cancel, now, out);
        }
        let user = rest;
        let cancel = ShardMessage::Cancel {
            user: user.into(),
            id: scheduled.into(),
            by,
            origin,
        };
        self.tell_user_home(user, cancel, now, out);
    }

    /// Puts back a dedup key read from the store at start.
    pub fn restore_dedup(&mut self, key: Box<str>, expires_ms: u64, now: u64) {
        if key.starts_with("channel:") {
            self.channel_dedup.restore(key, expires_ms, now);
        } else if key.starts_with("group:") {
            self.queues.restore_dedup(key, expires_ms, now);
        } else {
            self.inboxes.restore_dedup(key, expires_ms, now);
        }
    }

    /// The shard whose broker keeps `user`'s inbox.
    pub fn user_home(user: &str, shards: usize) -> usize {
        crate::ids::home_shard(["@user", user], shards)
    }
}

impl Broker {
    /// What this broker has counted, for the metrics (cheap: a few additions).
    pub fn counters(&self) -> Counters {
        let (users, inbox_messages, inbox_bytes) = self.inboxes.counts();
        let (queues, queue_messages, queue_bytes) = self.queues.counts();
        let mut dead_letters = users.dead_letters;
        for (total, more) in dead_letters.iter_mut().zip(queues.dead_letters) {
            *total += more;
        }
        Counters {
            redeliveries: users.redeliveries + queues.redeliveries,
            dead_letters,
            recoveries: self.history.recoveries(),
            inbox_messages: inbox_messages as u64,
            inbox_bytes: inbox_bytes as u64,
            queue_messages: queue_messages as u64,
            queue_bytes: queue_bytes as u64,
        }
    }
}
