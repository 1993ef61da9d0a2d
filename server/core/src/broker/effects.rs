//! What the broker asks the shard to do, collected in a buffer the shard reuses.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::messages::ShardMessage;
use super::presence::Snapshot;
use super::records::Record;
use super::requests::{Answer, Origin};
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::Priority;

/// Several messages' frames in one buffer, as one connection gets them.
#[derive(Debug, Clone)]
pub(super) struct Frames {
    pub(super) bytes: Bytes,
    pub(super) messages: usize,
    /// The first message's [`Published::born_us`].
    pub(super) born_us: u64,
}

#[derive(Debug)]
enum Effect {
    Deliver {
        message: Arc<Published>,
        to: Range<usize>,
    },
    Frames {
        to: ConnId,
        lane: Priority,
        frames: Bytes,
        messages: usize,
        born_us: u64,
    },
    Arm,
    ToShard {
        shard: usize,
        message: ShardMessage,
    },
    Answer {
        origin: Origin,
        answer: Answer,
    },
    Presence {
        token: u64,
        snapshot: Snapshot,
    },
    Persist {
        token: Option<u64>,
        records: Vec<Record>,
    },
    Broadcast {
        message: Arc<Published>,
    },
}

/// Effects in the order the broker produced them; the recipients of all deliveries share one
/// buffer, so a delivery to N connections costs one entry and N ids.
#[derive(Debug, Default)]
pub struct Effects {
    list: Vec<Effect>,
    recipients: Vec<ConnId>,
}

/// One effect, as the shard applies it.
#[derive(Debug)]
pub enum Action<'a> {
    /// Queue `message` (in the lane of its priority, in the variant each connection takes) to
    /// each of `to`, writing it as soon as the connection's coalescing allows.
    Deliver {
        message: Arc<Published>,
        to: &'a [ConnId],
    },
    /// Queue a batch's `frames` (whole frames, one buffer) in `lane` to `to`, and write them now:
    /// they waited for this release. They are `messages` messages, the first born at
    /// `born_us` (see [`Published::born_us`]).
    Frames {
        to: ConnId,
        lane: Priority,
        frames: Bytes,
        messages: usize,
        born_us: u64,
    },
    /// A message waits in a batch: a coalescing release must come.
    Arm,
    /// Hand `message` to shard `shard`'s broker (through its mailbox).
    ToShard { shard: usize, message: ShardMessage },
    /// The request that shard `origin.shard` registered as `origin.token` is answered (a group
    /// join in place at its home, a message in an inbox, an ack): answer it there.
    Answer { origin: Origin, answer: Answer },
    /// The answer to the presence query made with `token`.
    Presence { token: u64, snapshot: Snapshot },
    /// Publish `message` (numbered by this shard, its channel's home) as if a client on this
    /// shard had: to every other shard, and here through [`super::Broker::publish`] once the
    /// effects are applied.
    Broadcast { message: Arc<Published> },
    /// Hand `records` to the store, in order; with a `token`, the store confirms them (or says
    /// it failed) with it, and the broker's [`super::Broker::stored`] must hear of it.
    Persist {
        token: Option<u64>,
        records: Vec<Record>,
    },
}

impl Effects {
    pub(super) fn deliver(
        &mut self,
        message: &Arc<Published>,
        to: impl IntoIterator<Item = ConnId>,
    ) {
        let start = self.recipients.len();
        self.recipients.extend(to);
        if self.recipients.len() > start {
            let to = start..self.recipients.len();
            self.list.push(Effect::Deliver {
                message: message.clone(),
                to,
            });
        }
    }

    pub(super) fn frames(&mut self, to: ConnId, lane: Priority, batch: Frames) {
        self.list.push(Effect::Frames {
            to,
            lane,
            frames: batch.bytes,
            messages: batch.messages,
            born_us: batch.born_us,
        });
    }

    pub(super) fn arm(&mut self) {
        self.list.push(Effect::Arm);
    }

    pub(super) fn send_to_shard(&mut self, shard: usize, message: ShardMessage) {
        self.list.push(Effect::ToShard { shard, message });
    }

    pub(super) fn answer(&mut self, origin: Origin, answer: Answer) {
        self.list.push(Effect::Answer { origin, answer });
    }

    pub(super) fn persist(&mut self, token: Option<u64>, records: Vec<Record>) {
        self.list.push(Effect::Persist { token, records });
    }

    pub(super) fn broadcast(&mut self, message: Arc<Published>) {
        self.list.push(Effect::Broadcast { message });
    }

    pub(super) fn presence(&mut self, token: u64, snapshot: Snapshot) {
        self.list.push(Effect::Presence { token, snapshot });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Hands each effect to `apply`, in order, and empties the buffer.
    pub fn drain(&mut self, mut apply: impl FnMut(Action<'_>)) {
        for effect in self.list.drain(..) {
            apply(match effect {
                Effect::Deliver { message, to } => Action::Deliver {
                    message,
                    to: &self.recipients[to],
                },
                Effect::Frames {
                    to,
                    lane,
                    frames,
                    messages,
                    born_us,
                } => Action::Frames {
                    to,
                    lane,
                    frames,
                    messages,
                    born_us,
                },
                Effect::Arm => Action::Arm,
                Effect::ToShard { shard, message } => Action::ToShard { shard, message },
                Effect::Answer { origin, answer } => Action::Answer { origin, answer },
                Effect::Presence { token, snapshot } => Action::Presence { token, snapshot },
                Effect::Persist { token, records } => Action::Persist { token, records },
                Effect::Broadcast { message } => Action::Broadcast { message },
            });
        }
        self.recipients.clear();
    }
}
