//! The broker: who gets what. It is keyed by ids, takes its inputs (subscriptions, publishes,
//! releases) as calls and answers with [`Effects`] that the shard applies after the call returns;
//! it never touches a socket or a connection, and reads no clock.
//!
//! - [`channels`]: channel → this shard's subscribers, and each channel's waiting batch.
//! - [`patterns`]: pattern subscriptions (`news.*`, `news.>`) in a token trie.
//! - [`batch`]: the batch membership rule (a message reaches exactly the subscribers its channel
//!   had when it was published).
//! - [`users`]: per-connection state, the one source of truth for a connection's subscriptions.

mod batch;
mod channels;
mod effects;
mod members;
mod patterns;
mod users;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::Permissions;
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::envelope::ErrorCode;
use crate::topic;
use channels::Channels;
pub use effects::{Action, Effects};
use members::{Members, Subscriber};
use patterns::Patterns;
use users::Conns;
pub use users::Peer;

/// Limits the broker enforces.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfig {
    /// Subscriptions one connection may hold (`connection.max_subscriptions`).
    pub max_subscriptions: usize,
    /// A channel batch this large goes out at once (`connection.write_batch_bytes`).
    pub max_batch_bytes: usize,
}

/// A request the broker refuses; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a connection may subscribe to at most {0} channels")]
    TooManySubscriptions(usize),
    #[error("not subscribed to {0:?}")]
    NotSubscribed(Box<str>),
    #[error("not allowed to {0}")]
    Forbidden(String),
}

impl Refusal {
    /// The error code the client is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            Refusal::NotSubscribed(_) => ErrorCode::NotSubscribed,
            Refusal::Forbidden(_) => ErrorCode::Forbidden,
        }
    }
}

/// One shard's delivery state.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    channels: Channels,
    patterns: Patterns,
    conns: Conns,
    /// User → this shard's connections of that user.
    users: HashMap<Arc<str>, Members>,
    /// Recipients being gathered (reused).
    scratch: Vec<ConnId>,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            config,
            channels: Channels::default(),
            patterns: Patterns::default(),
            conns: Conns::default(),
            users: HashMap::new(),
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

    /// A connection ended: it leaves every channel. Messages waiting in batches are not sent to
    /// it.
    pub fn disconnect(&mut self, id: ConnId) {
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
        }
        for name in state.subscriptions {
            if topic::is_pattern(&name) {
                self.patterns.remove(&name, id);
            } else {
                self.channels.unsubscribe(&name, id, None);
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
    pub fn subscribe(&mut self, id: ConnId, channel: &str) -> Result<(), Refusal> {
        let Some(conn) = self.conns.get_mut(id) else {
            return Ok(());
        };
        if conn.subscriptions.contains(channel) {
            return Ok(());
        }
        if !conn.peer.permissions.may_subscribe(channel) {
            return Err(Refusal::Forbidden(format!("subscribe to {channel:?}")));
        }
        let max = self.config.max_subscriptions;
        if conn.subscriptions.len() >= max {
            return Err(Refusal::TooManySubscriptions(max));
        }
        conn.subscriptions.insert(channel.into());
        if topic::is_pattern(channel) {
            let sub = Subscriber {
                id,
                lz4: conn.peer.lz4,
            };
            self.patterns.insert(channel, sub);
        } else {
            self.channels.subscribe(channel, id, conn.peer.lz4);
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
        if topic::is_pattern(channel) {
            self.patterns.remove(channel, id);
        } else {
            self.channels.unsubscribe(channel, id, Some(out));
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
    /// A message that pattern subscriptions on this shard match is not batched: the channel's
    /// waiting batch goes out, then the message at once, to each connection subscribed to the
    /// channel or to a matching pattern once, however many of its subscriptions match.
    pub fn publish(&mut self, message: &Arc<Published>, batch: bool, out: &mut Effects) {
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

    /// Sends every waiting batch out (at the shard's coalescing release, and before shutdown).
    pub fn release(&mut self, out: &mut Effects) {
        self.channels.release(out);
    }
}
