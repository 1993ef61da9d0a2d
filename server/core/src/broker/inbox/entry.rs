//! One message in an inbox or queue, and where it stands.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::records::StoredMessage;
use crate::ids::ConnId;
use crate::protocol::{frame, Priority};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Waiting for the store's confirmation.
    Storing,
    /// To be delivered once `not_before` has passed and a recipient is connected.
    Ready { not_before: u64 },
    /// Delivered (to `to`, in a queue; to every connection of the user, in an inbox);
    /// acknowledged by `due` or redelivered.
    InFlight { due: u64, to: Option<ConnId> },
}

impl State {
    /// The time its timer is set for, if any.
    pub(super) fn timer(self) -> Option<u64> {
        match self {
            State::Storing | State::Ready { not_before: 0 } => None,
            State::Ready { not_before: at } | State::InFlight { due: at, .. } => Some(at),
        }
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) id: Arc<str>,
    pub(super) frame: Bytes,
    pub(super) priority: Priority,
    pub(super) created_ms: u64,
    pub(super) expires_ms: u64,
    /// When it was scheduled for (0: not scheduled).
    pub(super) not_before_ms: u64,
    pub(super) from: Option<Arc<str>>,
    /// Deliveries so far (a message restored from the store counts one: it may have been
    /// delivered before the restart).
    pub(super) attempts: u32,
    /// The queue holders it was delivered to (at most `ack.max_deliver`).
    pub(super) given: Vec<ConnId>,
    pub(super) persisted: bool,
    pub(super) state: State,
}

impl Entry {
    pub(super) fn stored(&self) -> StoredMessage {
        StoredMessage {
            id: self.id.clone(),
            payload: Bytes::copy_from_slice(frame::payload_of(&self.frame)),
            priority: self.priority,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            not_before_ms: self.not_before_ms,
            from: self.from.clone(),
        }
    }

    /// The frame of delivery number `attempts`: the first is the frame as put, later ones
    /// carry `"redelivered":k`.
    pub(super) fn frame(&self) -> Bytes {
        if self.attempts <= 1 {
            return self.frame.clone();
        }
        with_field(
            &self.frame,
            &format!("\"redelivered\":{}", self.attempts - 1),
        )
    }
}

/// `frame` (a text frame holding a JSON object) with `field` (`"name":value`) added last.
pub(crate) fn with_field(frame: &Bytes, field: &str) -> Bytes {
    let payload = frame::payload_of(frame);
    let Some((_, head)) = payload.split_last() else {
        return frame.clone();
    };
    let mut buf = frame::payload_buffer(payload.len() + field.len() + 2);
    buf.extend_from_slice(head);
    buf.extend_from_slice(b",");
    buf.extend_from_slice(field.as_bytes());
    buf.extend_from_slice(b"}");
    frame::finish(buf, frame::OpCode::Text)
}

/// A recipient connection of an inbox or queue, with what it has in flight (queues only).
#[derive(Debug, Clone, Copy)]
pub(super) struct Holder {
    pub(super) id: ConnId,
    pub(super) in_flight: usize,
}
