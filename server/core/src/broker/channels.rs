//! A shard's channel index: channel name → this shard's subscribers, and the channel's [`Batch`]
//! of messages waiting for the next release. Never shared with other shards; a publish on
//! another shard arrives through the mailbox and is looked up here.

use std::collections::HashMap;
use std::sync::Arc;

use super::batch::{Batch, Subscriber};
use super::effects::Effects;
use crate::ids::{ConnId, IdMap};
use crate::message::Published;

/// One channel on this shard.
#[derive(Debug, Default)]
struct Channel {
    /// Subscribers in no particular order (kept dense, so a delivery copies a slice of ids).
    subs: Vec<Subscriber>,
    /// Connection id → its place in `subs`.
    index: IdMap<ConnId, usize>,
    batch: Batch,
}

impl Channel {
    fn release(&mut self, out: &mut Effects) {
        self.batch.deliver(&self.subs, out);
    }
}

/// Channel → local subscribers and waiting batch.
#[derive(Debug, Default)]
pub(super) struct Channels {
    map: HashMap<Box<str>, Channel>,
    /// Channels whose batch has messages (names of removed channels are skipped).
    batched: Vec<Box<str>>,
}

impl Channels {
    /// Adds `id` to `channel` (the caller knows it is not subscribed yet).
    pub(super) fn subscribe(&mut self, channel: &str, id: ConnId, lz4: bool) {
        let entry = match self.map.get_mut(channel) {
            Some(entry) => entry,
            None => self.map.entry(channel.into()).or_default(),
        };
        entry.index.insert(id, entry.subs.len());
        entry.subs.push(Subscriber { id, lz4 });
        entry.batch.join(id);
    }

    /// Removes `id` from `channel`. With `out`, it gets the messages waiting in the channel's
    /// batch that were published while it was subscribed.
    pub(super) fn unsubscribe(&mut self, channel: &str, id: ConnId, out: Option<&mut Effects>) {
        let Some(entry) = self.map.get_mut(channel) else {
            return;
        };
        let Some(at) = entry.index.remove(&id) else {
            return;
        };
        let leaving = entry.subs.swap_remove(at);
        if let Some(moved) = entry.subs.get(at) {
            entry.index.insert(moved.id, at);
        }
        entry.batch.leave(leaving, out);
        if entry.subs.is_empty() {
            self.map.remove(channel);
        }
    }

    /// Delivers `message` to the channel's subscribers now, or adds it to the batch (see
    /// [`super::Broker::publish`]).
    pub(super) fn publish(
        &mut self,
        message: &Arc<Published>,
        batch: bool,
        max_batch_bytes: usize,
        out: &mut Effects,
    ) {
        let Some(entry) = self.map.get_mut(&*message.channel) else {
            return;
        };
        let critical = message.priority == crate::protocol::Priority::Critical;
        if critical {
            entry.release(out);
        } else if batch || !entry.batch.is_empty() {
            if entry.batch.is_empty() {
                self.batched.push(message.channel.clone());
            }
            if entry.batch.push(message.clone()) < max_batch_bytes {
                out.arm();
            } else {
                entry.release(out);
            }
            return;
        }
        out.deliver(message, entry.subs.iter().map(|s| s.id));
    }

    /// Sends every waiting batch out.
    pub(super) fn release(&mut self, out: &mut Effects) {
        for name in self.batched.drain(..) {
            if let Some(entry) = self.map.get_mut(&name) {
                entry.release(out);
            }
        }
    }
}
