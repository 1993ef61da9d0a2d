//! Channel batches. On a busy shard (see `connection.write_coalesce_us`) the messages a channel gets
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

use std::sync::Arc;

use bytes::BytesMut;

use super::effects::{Effects, Frames};
use super::members::Subscriber;
use crate::ids::{ConnId, IdMap};
use crate::message::Published;
use crate::protocol::Priority;

/// A channel's messages waiting for the shard's next release.
#[derive(Debug, Default)]
pub(super) struct Batch {
    messages: Vec<Arc<Published>>,
    /// The plain frames' bytes.
    bytes: usize,
    /// Subscribers that joined while messages waited: connection id → index of their first
    /// message.
    joined: IdMap<ConnId, usize>,
}

impl Batch {
    /// Adds `message`; returns the batch's bytes (plain frames).
    pub(super) fn push(&mut self, message: Arc<Published>) -> usize {
        self.bytes += message.frame.len();
        self.messages.push(message);
        self.bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Notes that `id` subscribed now: it gets only the messages added from here on.
    pub(super) fn join(&mut self, id: ConnId) {
        if !self.messages.is_empty() {
            self.joined.insert(id, self.messages.len());
        }
    }

    /// `leaving` unsubscribed. With `out`, it gets at once the waiting messages published while
    /// it was subscribed; the others still wait for the release.
    pub(super) fn leave(&mut self, leaving: Subscriber, out: Option<&mut Effects>) {
        let first = self.joined.remove(&leaving.id).unwrap_or(0);
        if let Some(out) = out {
            self.queue(&[leaving], |_| first, out);
        }
    }

    /// Queues the waiting messages to `subscribers` (per lane, one entry of all their frames, the
    /// lz4 variants for `wsedge.v1.lz4` clients) and empties the batch.
    pub(super) fn deliver(&mut self, subscribers: &[Subscriber], out: &mut Effects) {
        if self.messages.is_empty() {
            return;
        }
        let joined = std::mem::take(&mut self.joined);
        self.queue(subscribers, |id| joined.get(&id).copied().unwrap_or(0), out);
        self.messages.clear();
        self.bytes = 0;
    }

    /// Queues to each of `subscribers` the messages from `first(its id)` on; the frames of the
    /// whole batch are built once per lane and variant, and shared.
    fn queue(
        &self,
        subscribers: &[Subscriber],
        first: impl Fn(ConnId) -> usize,
        out: &mut Effects,
    ) {
        for lane in Priority::ALL {
            let in_lane = |from: usize| {
                let messages = self.messages.get(from..).unwrap_or_default();
                messages.iter().filter(move |m| m.priority == lane)
            };
            if in_lane(0).next().is_none() {
                continue;
            }
            let mut whole: [Option<Frames>; 2] = [None, None];
            for sub in subscribers {
                let frames = match first(sub.id) {
                    0 => whole[sub.lz4 as usize]
                        .get_or_insert_with(|| frames_of(in_lane(0), sub.lz4))
                        .clone(),
                    from if in_lane(from).next().is_some() => frames_of(in_lane(from), sub.lz4),
                    _ => continue,
                };
                out.frames(sub.id, lane, frames);
            }
        }
    }
}

/// The frames of `messages` (their lz4 variants if `lz4`) in one buffer; a lone frame is
/// shared, not copied.
fn frames_of<'a>(messages: impl Iterator<Item = &'a Arc<Published>>, lz4: bool) -> Frames {
    let messages: Vec<&Arc<Published>> = messages.collect();
    let born_us = messages.first().map_or(0, |m| m.born_us);
    let bytes = match messages[..] {
        [only] => only.frame_for(lz4).clone(),
        _ => {
            let frames = messages.iter().map(|m| m.frame_for(lz4));
            let mut buffer = BytesMut::with_capacity(frames.clone().map(|f| f.len()).sum());
            frames.for_each(|frame| buffer.extend_from_slice(frame));
            buffer.freeze()
        }
    };
    Frames {
        bytes,
        messages: messages.len(),
        born_us,
    }
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
        assert_eq!(
            frames_of(one.iter(), false).bytes.as_ptr(),
            one[0].frame.as_ptr()
        );
        let three = [message(b"a"), message(b"bc"), message(b"d")];
        let joined: Vec<u8> = three.iter().flat_map(|m| m.frame.to_vec()).collect();
        assert_eq!(frames_of(three.iter(), false).bytes, joined);
    }
}
