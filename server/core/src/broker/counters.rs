//! What the broker counts for the server's metrics: totals since the start, and what it holds
//! now. Plain integers: the broker has one owner, which copies them out (see
//! `Broker::counters`).

use super::records::DeadReason;

/// A shard's broker's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Messages delivered again (after an ack timeout, a `nak`, or a member that left).
    pub redeliveries: u64,
    /// Messages given up on, by [`DeadReason`] (`reason as usize`).
    pub dead_letters: [u64; DeadReason::ALL.len()],
    /// Subscribes and history reads with `since`: `[recovered, not recovered]`.
    pub recoveries: [u64; 2],
    /// Messages and frame bytes held in user inboxes now.
    pub inbox_messages: u64,
    pub inbox_bytes: u64,
    /// Messages and frame bytes held in the queues of acknowledged subscriptions and groups.
    pub queue_messages: u64,
    pub queue_bytes: u64,
}

/// One store of messages' totals (an [`super::inbox::Inboxes`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct InboxCounts {
    pub(super) redeliveries: u64,
    pub(super) dead_letters: [u64; DeadReason::ALL.len()],
}
