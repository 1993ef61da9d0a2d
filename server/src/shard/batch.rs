//! Channel batches. On a busy shard (see [`crate::shard::coalesce`]) the messages a channel gets
//! during one coalescing round wait in the channel's batch, and at the round's release each
//! subscriber gets them as one outbox entry per lane holding all their frames, instead of one
//! entry per message. Queueing, gathering and the kernel's copy of each iovec then cost once per
//! subscriber and round rather than once per delivery.
//!
//! A batch that reaches `connection.write_batch_bytes` (one vectored write) goes out at once, so
//! a flooded channel holds at most that much per shard until the release.
//!
//! Order within a lane is kept, and every message reaches exactly the subscribers the channel had
//! when it was published, as it would unbatched: a subscriber that joins while messages wait gets
//! only the later ones, and one that leaves gets the waiting ones it was there for at once.
//! Neither sends the batch out early for the others, so subscription churn on a busy channel
//! costs no extra writes to its other subscribers.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::connection::Conn;
use crate::message::Published;
use crate::protocol::Priority;

/// A channel's messages waiting for the shard's next release.
#[derive(Default)]
pub struct Batch {
    messages: Vec<Arc<Published>>,
    /// The plain frames' bytes.
    bytes: usize,
    /// Subscribers that joined while messages waited: connection id → index of their first
    /// message.
    joined: HashMap<u64, usize>,
}

impl Batch {
    /// Adds `message`; returns the batch's bytes (plain frames).
    pub fn push(&mut self, message: Arc<Published>) -> usize {
        self.bytes += message.frame.len();
        self.messages.push(message);
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Notes that `conn_id` subscribed now: it gets only the messages added from here on.
    pub fn join(&mut self, conn_id: u64) {
        if !self.messages.is_empty() {
            self.joined.insert(conn_id, self.messages.len());
        }
    }

    /// Queues to `conn`, which is unsubscribing, the waiting messages published while it was
    /// subscribed; the others still wait for the release.
    pub fn leave(&mut self, conn: &Rc<Conn>) {
        let first = self.joined.remove(&conn.id).unwrap_or(0);
        if conn.is_open() {
            self.queue(std::iter::once(conn), |_| first);
        }
    }

    /// Queues the waiting messages to `subscribers` (per lane, one entry of all their frames, the
    /// lz4 variants for `wsedge.v1.lz4` clients) and empties the batch.
    pub fn deliver<'a>(&mut self, subscribers: impl Iterator<Item = &'a Rc<Conn>> + Clone) {
        let joined = std::mem::take(&mut self.joined);
        self.queue(subscribers, |id| joined.get(&id).copied().unwrap_or(0));
        self.messages.clear();
        self.bytes = 0;
    }

    /// Queues to each of `subscribers` the messages from `first(its id)` on; the frames of the
    /// whole batch are built once per lane and variant, and shared.
    fn queue<'a>(
        &self,
        subscribers: impl Iterator<Item = &'a Rc<Conn>> + Clone,
        first: impl Fn(u64) -> usize,
    ) {
        for lane in Priority::ALL {
            let in_lane = |from: usize| {
                let messages = self.messages.get(from..).unwrap_or_default();
                messages.iter().filter(move |m| m.priority == lane)
            };
            if in_lane(0).next().is_none() {
                continue;
            }
            let mut whole = [None, None];
            for conn in subscribers.clone() {
                let frames = match first(conn.id) {
                    0 => whole[conn.lz4 as usize]
                        .get_or_insert_with(|| frames(in_lane(0), conn.lz4))
                        .clone(),
                    from if in_lane(from).next().is_some() => frames(in_lane(from), conn.lz4),
                    _ => continue,
                };
                conn.deliver_batch(lane, frames);
            }
        }
    }
}

/// The frames of `messages` (their lz4 variants if `lz4`) in one buffer; a lone frame is shared,
/// not copied.
fn frames<'a>(messages: impl Iterator<Item = &'a Arc<Published>>, lz4: bool) -> Bytes {
    let frames: Vec<&Bytes> = messages.map(|m| m.frame_for(lz4)).collect();
    if let [only] = frames[..] {
        return only.clone();
    }
    let mut buffer = BytesMut::with_capacity(frames.iter().map(|f| f.len()).sum());
    for frame in frames {
        buffer.extend_from_slice(frame);
    }
    buffer.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{self, OpCode};

    fn message(text: &[u8]) -> Arc<Published> {
        let frame = frame::encode(OpCode::Text, text);
        Arc::new(Published::new("ch", Priority::Normal, frame, usize::MAX))
    }

    #[test]
    fn a_lone_frame_is_shared_and_several_are_joined_in_order() {
        let one = [message(b"a")];
        assert_eq!(frames(one.iter(), false).as_ptr(), one[0].frame.as_ptr());
        let three = [message(b"a"), message(b"bc"), message(b"d")];
        let joined: Vec<u8> = three.iter().flat_map(|m| m.frame.to_vec()).collect();
        assert_eq!(frames(three.iter(), false), joined);
    }
}
