//! The broker: who gets what. It is keyed by ids, takes its inputs (subscriptions, publishes,
//! releases) as calls and answers with [`Effects`] that the shard applies after the call returns;
//! it never touches a socket or a connection, and reads no clock.
//!
//! - [`channels`]: channel → this shard's subscribers, and each channel's waiting batch.
//! - [`batch`]: the batch membership rule (a message reaches exactly the subscribers its channel
//!   had when it was published).
//! - [`users`]: per-connection state, the one source of truth for a connection's subscriptions.

mod batch;
mod channels;
mod effects;
mod users;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::envelope::ErrorCode;
use channels::Channels;
pub use effects::{Action, Effects};
use users::Conns;

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
}

impl Refusal {
    /// The error code the client is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            Refusal::NotSubscribed(_) => ErrorCode::NotSubscribed,
        }
    }
}

/// One shard's delivery state.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    channels: Channels,
    conns: Conns,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            config,
            channels: Channels::default(),
            conns: Conns::default(),
        }
    }

    /// A connection opened on this shard; `lz4` when it takes `wsedge.v1.lz4` frames.
    pub fn connect(&mut self, id: ConnId, lz4: bool) {
        self.conns.insert(id, lz4);
    }

    /// A connection ended: it leaves every channel. Messages waiting in batches are not sent to
    /// it.
    pub fn disconnect(&mut self, id: ConnId) {
        for channel in self.conns.remove(id) {
            self.channels.unsubscribe(&channel, id, None);
        }
    }

    /// Subscribes `id` to `channel`. Already subscribed is not an error. It will not get the
    /// messages already waiting in the channel's batch.
    pub fn subscribe(&mut self, id: ConnId, channel: &str) -> Result<(), Refusal> {
        let Some(conn) = self.conns.get_mut(id) else {
            return Ok(());
        };
        if conn.subscriptions.contains(channel) {
            return Ok(());
        }
        let max = self.config.max_subscriptions;
        if conn.subscriptions.len() >= max {
            return Err(Refusal::TooManySubscriptions(max));
        }
        conn.subscriptions.insert(channel.into());
        self.channels.subscribe(channel, id, conn.lz4);
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
        self.channels.unsubscribe(channel, id, Some(out));
        Ok(())
    }

    /// Delivers `message` to this shard's subscribers of its channel.
    ///
    /// The coalescing rule: with `batch` (the shard is busy and coalesces writes), or while the
    /// channel's batch already holds messages (so order is kept), the message waits in the batch
    /// for the next [`Broker::release`] ([`Action::Arm`] asks for one); a batch of
    /// `max_batch_bytes` or more goes out at once. A critical message never waits: it sends the
    /// waiting batch out ahead of itself.
    pub fn publish(&mut self, message: &Arc<Published>, batch: bool, out: &mut Effects) {
        self.channels
            .publish(message, batch, self.config.max_batch_bytes, out);
    }

    /// Sends every waiting batch out (at the shard's coalescing release, and before shutdown).
    pub fn release(&mut self, out: &mut Effects) {
        self.channels.release(out);
    }
}
