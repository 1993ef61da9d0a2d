//! A shard's channel index: channel name → this shard's subscribers, and the channel's [`Batch`]
//! of messages waiting for the next release. Never shared with other shards; a publish on
//! another shard arrives through the mailbox and is looked up here.

use std::collections::HashMap;
use std::sync::Arc;

use super::batch::Batch;
use super::effects::Effects;
use super::members::{Members, Subscriber};
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::Priority;

/// One channel on this shard.
#[derive(Debug, Default)]
struct Channel {
    subs: Members,
    batch: Batch,
}

impl Channel {
    fn release(&mut self, out: &mut Effects) {
        self.batch.deliver(self.subs.as_slice(), out);
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
        if entry.subs.insert(Subscriber { id, lz4 }) {
            entry.batch.join(id);
        }
    }

    /// Removes `id` from `channel`. With `out`, it gets the messages waiting in the channel's
    /// batch that were published while it was subscribed.
    pub(super) fn unsubscribe(&mut self, channel: &str, id: ConnId, out: Option<&mut Effects>) {
        let Some(entry) = self.map.get_mut(channel) else {
            return;
        };
        let Some(leaving) = entry.subs.remove(id) else {
            return;
        };
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
        if message.priority == Priority::Critical {
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
        out.deliver(message, entry.subs.ids());
    }

    /// Sends `channel`'s waiting batch out now and appends its subscribers to `out` (a publish
    /// that pattern subscribers get too is delivered at once; see [`super::Broker::publish`]).
    pub(super) fn release_and_list(
        &mut self,
        channel: &str,
        effects: &mut Effects,
        out: &mut Vec<ConnId>,
    ) {
        if let Some(entry) = self.map.get_mut(channel) {
            entry.release(effects);
            out.extend(entry.subs.ids());
        }
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
