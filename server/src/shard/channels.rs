//! A shard's channel index: channel name → this shard's subscribed connections, and the channel's
//! [`Batch`] of messages waiting for the next release. Never shared with other shards; a publish
//! on another shard arrives through the mailbox and is looked up here.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::connection::Conn;
use crate::message::Published;
use crate::protocol::Priority;
use crate::shard::batch::Batch;

/// One channel on this shard.
#[derive(Default)]
struct Channel {
    /// Subscribers by connection id.
    subs: HashMap<u64, Rc<Conn>>,
    batch: Batch,
}

impl Channel {
    fn deliver_batch(&mut self) {
        self.batch.deliver(self.subs.values());
    }
}

/// Channel → local subscribers and waiting batch.
#[derive(Default)]
pub struct Channels {
    map: HashMap<Box<str>, Channel>,
    /// Channels whose batch has messages (names of removed channels are skipped).
    batched: Vec<Box<str>>,
}

impl Channels {
    /// Adds `conn` to `channel`; false if it was already subscribed. It will not get the
    /// messages already waiting in the channel's batch.
    pub fn subscribe(&mut self, channel: &str, conn: &Rc<Conn>) -> bool {
        let entry = match self.map.get_mut(channel) {
            Some(entry) => entry,
            None => self.map.entry(channel.into()).or_default(),
        };
        let added = entry.subs.insert(conn.id, conn.clone()).is_none();
        if added {
            entry.batch.join(conn.id);
        }
        added
    }

    /// Removes `conn_id` from `channel`; false if it was not subscribed. It gets the messages
    /// waiting in the channel's batch that were published while it was subscribed, at once.
    pub fn unsubscribe(&mut self, channel: &str, conn_id: u64) -> bool {
        let Some(entry) = self.map.get_mut(channel) else {
            return false;
        };
        let Some(conn) = entry.subs.remove(&conn_id) else {
            return false;
        };
        entry.batch.leave(&conn);
        if entry.subs.is_empty() {
            self.map.remove(channel);
        }
        true
    }

    /// Delivers `message` to the channel's subscribers, or adds it to the channel's batch when
    /// `batch` says so or the batch already has messages (so order is kept); a batch of
    /// `max_batch_bytes` or more goes out at once. A critical message is never batched: it sends
    /// the waiting batch out ahead of it. True if the message waits in the batch.
    pub fn publish(
        &mut self,
        message: &Arc<Published>,
        batch: bool,
        max_batch_bytes: usize,
    ) -> bool {
        let Some(entry) = self.map.get_mut(&*message.channel) else {
            return false;
        };
        if message.priority == Priority::Critical {
            entry.deliver_batch();
        } else if batch || !entry.batch.is_empty() {
            if entry.batch.is_empty() {
                self.batched.push(message.channel.clone());
            }
            if entry.batch.push(message.clone()) < max_batch_bytes {
                return true;
            }
            entry.deliver_batch();
            return false;
        }
        for conn in entry.subs.values() {
            conn.deliver(message);
        }
        false
    }

    /// Sends every waiting batch out (at the shard's release, and before shutting down).
    pub fn deliver_batches(&mut self) {
        for name in self.batched.drain(..) {
            if let Some(entry) = self.map.get_mut(&name) {
                entry.deliver_batch();
            }
        }
    }
}
