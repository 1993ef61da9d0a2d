//! What the broker asks the store to keep: the records of durable inboxes and queues, dead
//! letters and the dedup window. The store (a thread of the server) writes them in the order
//! they come and confirms the ones that carry a token once they are durable.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::Priority;

/// One write to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Message `seq` of `user`'s inbox.
    InboxPut {
        user: Arc<str>,
        seq: u64,
        message: StoredMessage,
    },
    /// Message `seq` of `user`'s inbox was acknowledged, dead-lettered or expired.
    InboxDelete {
        user: Arc<str>,
        seq: u64,
    },
    /// Message `seq` of durable queue `queue` (`group:<group>@<channel>`).
    QueuePut {
        queue: Arc<str>,
        seq: u64,
        message: StoredMessage,
    },
    /// Message `seq` of `queue` was acknowledged, dead-lettered or expired.
    QueueDelete {
        queue: Arc<str>,
        seq: u64,
    },
    /// Group `queue` is durable: it takes messages from the start on, members or not.
    Durable {
        queue: Arc<str>,
    },
    /// Message `offset` of `channel`'s durable history, in `epoch` (its payload is the whole
    /// `message` frame's JSON, offset and epoch included).
    HistoryPut {
        channel: Arc<str>,
        offset: u64,
        epoch: Arc<str>,
        message: StoredMessage,
    },
    /// Message `offset` of `channel`'s history was dropped (trimmed, expired or lost).
    HistoryDelete {
        channel: Arc<str>,
        offset: u64,
    },
    /// Scheduled publish `seq` of `channel` (its `message.payload` is the `data` JSON).
    SchedulePut {
        channel: Arc<str>,
        seq: u64,
        message: StoredMessage,
    },
    /// Scheduled publish `seq` of `channel` was published or cancelled.
    ScheduleDelete {
        channel: Arc<str>,
        seq: u64,
    },
    /// Group `queue` is no longer durable: its record and its messages go.
    DurableDelete {
        queue: Arc<str>,
    },
    DeadLetter(DeadLetter),
    /// `key` (destination and `msg_id`) was seen; a repeat before `expires_ms` is a duplicate.
    Dedup {
        key: Box<str>,
        expires_ms: u64,
    },
}

/// A message as an inbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message id: what the recipient acknowledges.
    pub id: Arc<str>,
    /// The JSON text of the `{"op":"message",...}` the recipient gets.
    pub payload: Bytes,
    pub priority: Priority,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Not delivered before this (a scheduled message); 0: at once.
    pub not_before_ms: u64,
    /// The sender's user, who alone may cancel a scheduled message.
    pub from: Option<Arc<str>>,
}

/// Why a message was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Delivered `ack.max_deliver` times, never acknowledged.
    MaxDeliver,
    /// The recipient answered `term`.
    Terminated,
    /// Its time to live (`inbox.ttl_s`) ran out.
    Expired,
}

impl DeadReason {
    /// Every reason (`reason as usize` indexes it).
    pub const ALL: [DeadReason; 3] = [
        DeadReason::MaxDeliver,
        DeadReason::Terminated,
        DeadReason::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::MaxDeliver => "max_deliver",
            DeadReason::Terminated => "terminated",
            DeadReason::Expired => "expired",
        }
    }

    pub fn parse(name: &str) -> Option<DeadReason> {
        DeadReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// A message given up on, kept with why and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message: StoredMessage,
    /// Where it was going: `user:<id>`.
    pub destination: Box<str>,
    pub reason: DeadReason,
    /// The `term` request's reason, if any.
    pub detail: Option<Box<str>>,
    /// Times it was delivered.
    pub attempts: u32,
    /// Unix milliseconds.
    pub dead_ms: u64,
}
