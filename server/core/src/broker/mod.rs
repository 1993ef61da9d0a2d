//! The broker: who gets what. It is keyed by ids, takes its inputs (subscriptions, publishes,
//! releases) as calls and answers with [`Effects`] that the shard applies after the call returns;
//! it never touches a socket or a connection, and reads no clock.
//!
//! - [`channels`]: channel → this shard's subscribers, and each channel's waiting batch.
//! - [`patterns`]: pattern subscriptions (`news.*`, `news.>`) in a token trie.
//! - [`groups`]: queue groups whose home is this shard, and the pick of one member per message;
//!   [`group_ops`]: the broker's joins, leaves and picks through the mailboxes.
//! - [`presence`]: who is subscribed to the channels whose home is this shard.
//! - [`messages`]: what one shard's broker tells another's.
//! - [`batch`]: the batch membership rule (a message reaches exactly the subscribers its channel
//!   had when it was published).
//! - [`users`]: per-connection state, the one source of truth for a connection's subscriptions.
//! - [`inbox`]: acknowledged direct messages, in the inboxes of the users homed on this shard;
//!   [`delivery`]: the broker's side of them (routing to a user's home, settles, deadlines);
//!   [`dedup`]: the `msg_id` window; [`records`]: what the store is asked to keep.
//! - [`acked`]: acknowledged subscriptions and groups, whose messages wait in queues (the
//!   rules of [`inbox`]); [`queues`]: their names and which channels they take.
//! - [`history`]: channel history (in memory, or durable in the store); [`history_ops`]: the
//!   broker's side of it.
//! - [`receive`]: what the broker does with what another shard's broker sent it.
//! - [`requests`]: requests that wait for an answer from another shard or the store, and the
//!   answer; [`refusal`]: why a request is refused; [`config`]: the broker's settings.
//!
//! No module imports this one except the `impl Broker` blocks (`group_ops`, `delivery`,
//! `acked`, `history_ops`, `receive`), which nothing imports: the layout has no import cycle
//! (`scripts/check-cycles.py`).

mod acked;
mod batch;
mod channels;
mod config;
mod counters;
mod dedup;
mod delivery;
mod effects;
mod group_ops;
mod groups;
mod history;
mod history_ops;
mod inbox;
mod members;
mod messages;
mod patterns;
mod presence;
mod queues;
mod receive;
mod records;
mod refusal;
mod requests;
mod schedule_ops;
mod schedules;
mod users;

#[cfg(test)]
mod acked_tests;
#[cfg(test)]
mod durable_history_tests;
#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod inbox_tests;
#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Permissions;
use crate::ids::{ConnId, IdMap};
use crate::message::Published;
use crate::protocol::{reply, Priority};
use crate::topic;
use channels::Channels;
pub use config::{BrokerConfig, DeliveryConfig, HistoryConfig};
pub use counters::Counters;
use dedup::Dedup;
pub use effects::{Action, Effects};
use groups::Groups;
pub use groups::{GroupKey, Load};
use history::History;
pub use history::{Position, Read};
use inbox::{Inboxes, Kind};
use members::{Members, Subscriber};
use messages::PresenceChange;
pub use messages::ShardMessage;
use patterns::Patterns;
use presence::Presence;
pub use presence::Snapshot;
use queues::AckIndex;
pub use queues::{group_queue, queue_group};
pub use records::{DeadLetter, DeadReason, Record, StoredMessage};
pub use refusal::Refusal;
use requests::HistoryWrite;
pub use requests::{Answer, HistoryQuery, InboxMessage, Origin, SchedulePublish, Sequence, Settle};
use schedules::Schedules;
use users::Conns;
pub use users::Peer;

/// One shard's delivery state.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    channels: Channels,
    patterns: Patterns,
    conns: Conns,
    /// User → this shard's connections of that user.
    users: HashMap<Arc<str>, Members>,
    /// Queue groups whose home is this shard.
    homed: Groups,
    /// Presence of the channels whose home is this shard.
    presence: Presence,
    /// Channel → this shard's connections that asked for its join and leave events.
    watchers: HashMap<Arc<str>, Members>,
    /// Inboxes of the users whose home is this shard.
    inboxes: Inboxes,
    /// Queues of this shard's acknowledged subscriptions and of the acknowledged groups whose
    /// home is this shard.
    queues: Inboxes,
    /// Which queues take which channel's messages.
    acked: AckIndex,
    /// History of the channels whose home is this shard.
    history: History,
    /// The `msg_id`s of publishes to the channels whose home is this shard.
    channel_dedup: Dedup,
    /// Durable history messages being written, by store token (`8n + 3`).
    history_writes: IdMap<u64, HistoryWrite>,
    next_history_token: u64,
    /// Publishes scheduled for later on the channels whose home is this shard (store tokens
    /// `8n + 4`).
    schedules: Schedules,
    next_schedule_token: u64,
    /// Recipients being gathered (reused).
    scratch: Vec<ConnId>,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            inboxes: Inboxes::new(Kind::Users, config.delivery.clone(), config.shard),
            queues: Inboxes::new(Kind::Queues, config.delivery.clone(), config.shard),
            acked: AckIndex::default(),
            history: History::new(config.history, config.boot, config.shard),
            channel_dedup: Dedup::new(config.delivery.dedup_max_entries),
            history_writes: IdMap::default(),
            next_history_token: 3,
            schedules: Schedules::new(config.delivery.clone()),
            next_schedule_token: 4,
            config,
            channels: Channels::default(),
            patterns: Patterns::default(),
            conns: Conns::default(),
            users: HashMap::new(),
            homed: Groups::default(),
            presence: Presence::default(),
            watchers: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// A connection opened on this shard.
    pub fn connect(&mut self, id: ConnId, peer: Peer) {
        if let Some(user) = &peer.user {
            let sub = Subscriber { id, lz4: peer.lz4 };
            self.users.entry(user.clone()).or_default().insert(sub);
        }
        self.conns.insert(id, peer);
    }

    /// The connection refreshed its token: from now on it has `permissions` (subscriptions it
    /// already holds stay).
    pub fn refresh(&mut self, id: ConnId, permissions: Arc<Permissions>) {
        if let Some(conn) = self.conns.get_mut(id) {
            conn.peer.permissions = permissions;
        }
    }

    /// Whether `id` may publish to `channel`.
    pub fn check_publish(&self, id: ConnId, channel: &str) -> Result<(), Refusal> {
        match self.conns.get(id) {
            Some(conn) if !conn.peer.permissions.may_publish(channel) => {
                Err(Refusal::Forbidden(format!("publish to {channel:?}")))
            }
            _ => Ok(()),
        }
    }

    /// A connection ended: it leaves every channel and group. Messages waiting in batches are
    /// not sent to it.
    pub fn disconnect(&mut self, id: ConnId, now: u64, out: &mut Effects) {
        let Some(state) = self.conns.remove(id) else {
            return;
        };
        if let Some(user) = &state.peer.user {
            if let Some(conns) = self.users.get_mut(user) {
                conns.remove(id);
                if conns.is_empty() {
                    self.users.remove(user);
                }
            }
            let offline = ShardMessage::Offline {
                user: user.clone(),
                conn: id,
            };
            self.tell_user_home(user, offline, now, out);
        }
        for key in state.groups {
            self.leave_home(key, id, now, out);
        }
        for name in state.subscriptions {
            if state.acked.contains(&name) {
                self.unsubscribe_acked(id, &name, out);
            } else if topic::is_pattern(&name) {
                self.patterns.remove(&name, id);
            } else {
                self.channels.unsubscribe(&name, id, None);
                self.unwatch(&name, id);
                self.tell_presence_home(PresenceChange::Leave, &name, id, None, out);
            }
        }
    }

    /// Whether `id` may send a direct message to `user`: its publish permissions must allow the
    /// channel `user.<user>`.
    pub fn check_send(&self, id: ConnId, user: &str) -> Result<(), Refusal> {
        match self.conns.get(id) {
            Some(conn) if !conn.peer.permissions.may_publish(&format!("user.{user}")) => Err(
                Refusal::Forbidden(format!("send to user {user:?} (user.{user})")),
            ),
            _ => Ok(()),
        }
    }

    /// Delivers a direct message to this shard's connections of `user`, at once (it is not
    /// batched); returns how many it reached.
    pub fn send_local(&mut self, user: &str, message: &Arc<Published>, out: &mut Effects) -> usize {
        let Some(conns) = self.users.get(user) else {
            return 0;
        };
        out.deliver(message, conns.ids());
        conns.as_slice().len()
    }

    /// Subscribes `id` to `channel`, a (checked) channel name or pattern. Already subscribed is
    /// not an error. It will not get the messages already waiting in the channel's batch.
    ///
    /// A subscription to a channel (not a pattern) counts in its presence; with `presence`, the
    /// connection also gets the channel's join and leave events.
    pub fn subscribe(
        &mut self,
        id: ConnId,
        channel: &str,
        presence: bool,
        out: &mut Effects,
    ) -> Result<(), Refusal> {
        self.check_subscribe(id, channel)?;
        let Some(conn) = self.conns.get_mut(id) else {
            return Ok(());
        };
        if conn.subscriptions.contains(channel) {
            if conn.acked.contains(channel) {
                return Err(Refusal::Subscribed(channel.into()));
            }
            if presence {
                let sub = Subscriber {
                    id,
                    lz4: conn.peer.lz4,
                };
                self.watchers.entry(channel.into()).or_default().insert(sub);
            }
            return Ok(());
        }
        conn.subscriptions.insert(channel.into());
        if topic::is_pattern(channel) {
            let sub = Subscriber {
                id,
                lz4: conn.peer.lz4,
            };
            self.patterns.insert(channel, sub);
            return Ok(());
        }
        let sub = Subscriber {
            id,
            lz4: conn.peer.lz4,
        };
        let user = conn.peer.user.clone();
        self.channels.subscribe(channel, id, sub.lz4);
        if presence {
            self.watchers.entry(channel.into()).or_default().insert(sub);
        }
        self.tell_presence_home(PresenceChange::Join, channel, id, user, out);
        Ok(())
    }

    /// Whether `id` may take one more subscription to `channel`.
    fn check_subscribe(&self, id: ConnId, channel: &str) -> Result<(), Refusal> {
        let Some(conn) = self.conns.get(id) else {
            return Ok(());
        };
        if conn.subscriptions.contains(channel) {
            return Ok(());
        }
        if !conn.peer.permissions.may_subscribe(channel) {
            return Err(Refusal::Forbidden(format!("subscribe to {channel:?}")));
        }
        let max = self.config.max_subscriptions;
        if conn.held() >= max {
            return Err(Refusal::TooManySubscriptions(max));
        }
        Ok(())
    }

    /// Unsubscribes `id` from `channel`. It gets at once the messages waiting in the channel's
    /// batch that were published while it was subscribed.
    pub fn unsubscribe(
        &mut self,
        id: ConnId,
        channel: &str,
        out: &mut Effects,
    ) -> Result<(), Refusal> {
        let removed = self
            .conns
            .get_mut(id)
            .is_some_and(|conn| conn.subscriptions.remove(channel));
        if !removed {
            return Err(Refusal::NotSubscribed(channel.into()));
        }
        if self
            .conns
            .get_mut(id)
            .is_some_and(|conn| conn.acked.remove(channel))
        {
            self.unsubscribe_acked(id, channel, out);
        } else if topic::is_pattern(channel) {
            self.patterns.remove(channel, id);
        } else {
            self.channels.unsubscribe(channel, id, Some(out));
            self.unwatch(channel, id);
            self.tell_presence_home(PresenceChange::Leave, channel, id, None, out);
        }
        Ok(())
    }

    /// Delivers `message` to this shard's subscribers of its channel.
    ///
    /// The coalescing rule: with `batch` (the shard is busy and coalesces writes), or while the
    /// channel's batch already holds messages (so order is kept), the message waits in the batch
    /// for the next [`Broker::release`] ([`Action::Arm`] asks for one); a batch of
    /// `max_batch_bytes` or more goes out at once. A critical message never waits: it sends the
    /// waiting batch out ahead of itself.
    ///
    /// Each queue group homed on this shard whose channel or pattern matches gets the message
    /// too, at one member (see [`groups`]), at once.
    ///
    /// A message that pattern subscriptions on this shard match is not batched: the channel's
    /// waiting batch goes out, then the message at once, to each connection subscribed to the
    /// channel or to a matching pattern once, however many of its subscriptions match.
    pub fn publish(&mut self, message: &Arc<Published>, batch: bool, out: &mut Effects) {
        if !self.homed.is_empty() {
            self.route_groups(message, out);
        }
        let channel = &*message.channel;
        self.patterns.matching(channel, &mut self.scratch);
        if self.scratch.is_empty() {
            let max_bytes = self.config.max_batch_bytes;
            return self.channels.publish(message, batch, max_bytes, out);
        }
        self.channels
            .release_and_list(channel, out, &mut self.scratch);
        self.scratch.sort_unstable();
        self.scratch.dedup();
        out.deliver(message, self.scratch.drain(..));
    }

    /// Asks who is subscribed to `channel`, on any shard: [`Action::Presence`] with `token`
    /// answers.
    ///
    /// The query goes through the home shard's mailbox even when that is this shard, so it is
    /// answered after the joins and leaves other shards queued there before it: a client whose
    /// subscribe was confirmed on another shard is counted by a query made afterwards.
    pub fn query_presence(&mut self, channel: &str, token: u64, out: &mut Effects) {
        let query = ShardMessage::PresenceQuery {
            channel: channel.into(),
            origin: self.config.shard,
            token,
        };
        out.send_to_shard(presence::home(channel, self.config.shards), query);
    }

    fn unwatch(&mut self, channel: &str, id: ConnId) {
        if let Some(watchers) = self.watchers.get_mut(channel) {
            watchers.remove(id);
            if watchers.is_empty() {
                self.watchers.remove(channel);
            }
        }
    }

    /// Tells `channel`'s presence home that `id` joined or left it.
    fn tell_presence_home(
        &mut self,
        change: PresenceChange,
        channel: &str,
        id: ConnId,
        user: Option<Arc<str>>,
        out: &mut Effects,
    ) {
        let home = presence::home(channel, self.config.shards);
        let channel: Arc<str> = channel.into();
        let message = match change {
            PresenceChange::Join => ShardMessage::PresenceJoin {
                channel,
                conn: id,
                user,
            },
            PresenceChange::Leave => ShardMessage::PresenceLeave { channel, conn: id },
        };
        self.tell(home, message, 0, out);
    }

    /// Sends a join or leave event to every shard's watchers of `channel`.
    fn broadcast_presence(
        &mut self,
        kind: &str,
        channel: &str,
        user: Option<&str>,
        conn: ConnId,
        out: &mut Effects,
    ) {
        let frame = reply::presence_event(kind, channel, user, &conn.to_string());
        let event = Arc::new(Published::new(channel, Priority::Normal, frame, usize::MAX));
        for shard in 0..self.config.shards {
            if shard == self.config.shard {
                let event = event.clone();
                self.receive(ShardMessage::PresenceEvent { event }, 0, out);
            } else {
                let event = event.clone();
                out.send_to_shard(shard, ShardMessage::PresenceEvent { event });
            }
        }
    }

    /// Hands `message` to shard `shard`'s broker: this one at once, another through the
    /// mailboxes.
    fn tell(&mut self, shard: usize, message: ShardMessage, now: u64, out: &mut Effects) {
        if shard == self.config.shard {
            self.receive(message, now, out);
        } else {
            out.send_to_shard(shard, message);
        }
    }

    /// Answers request `token` registered on this shard.
    fn answer_here(&self, token: u64, answer: Answer, out: &mut Effects) {
        let origin = Origin {
            shard: self.config.shard,
            token,
        };
        out.answer(origin, answer);
    }

    /// Sends every waiting batch out (at the shard's coalescing release, and before shutdown).
    pub fn release(&mut self, out: &mut Effects) {
        self.channels.release(out);
    }
}
