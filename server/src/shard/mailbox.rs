//! A shard's inbound queue of [`Inbound`] messages from other shards: a bounded lock-free MPMC
//! queue (crossbeam `ArrayQueue`) plus an `AtomicWaker` so the owning shard sleeps until another
//! shard pushes.
//!
//! It is bounded twice: in messages (`server.shard_queue_capacity`) and in frame bytes
//! (`server.shard_queue_max_bytes`). A publisher first [`Mailbox::reserve`]s room in every
//! mailbox the message goes to and pushes only when all had room, so a message is either queued
//! on every shard or on none (see [`super::Shard::forward`]).

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::thread::Thread;

use atomic_waker::AtomicWaker;
use crossbeam_queue::{ArrayQueue, SegQueue};
use wsedge_core::broker::{Origin, ShardMessage};

use wsedge_core::message::Published;
use wsedge_core::protocol::Priority;

/// What one shard sends another.
#[derive(Debug)]
pub enum Inbound {
    /// A message published on the sending shard, for this shard's subscribers.
    Publish(Arc<Published>),
    /// A direct message for this shard's connections of a user (boxed, like every larger
    /// variant: the queue preallocates `shard_queue_capacity` slots of this enum's size).
    Direct(Box<Direct>),
    /// How many connections direct message `send` reached on the answering shard.
    Delivered { send: u64, count: usize },
    /// A persist publish: deliver it here like [`Inbound::Publish`], and answer the origin
    /// with [`Inbound::Persisted`] (its mailbox holds room for the answer).
    Persist(Box<(Arc<Published>, Origin)>),
    /// How many of the answering shard's durable groups will answer persist publish `token`.
    Persisted { token: u64, waiting: usize },
    /// For this shard's broker (queue groups, presence, inboxes).
    Broker(Box<ShardMessage>),
    /// From the store: the write made with `token` is durable (`ok`) or failed.
    Stored { token: u64, ok: bool },
    /// Shard `from` is alive and its queue to this shard moves (see [`super::health`]).
    Heartbeat { from: usize },
    /// Fault injection (`[api] fault_injection`): block this shard's thread for `ms`.
    Stall { ms: u64 },
    /// From the server API: close this shard's connections of a user.
    Disconnect(Box<Disconnect>),
}

/// Close every connection of `user` here with `code` and `reason`; answer how many.
#[derive(Debug)]
pub struct Disconnect {
    pub user: Arc<str>,
    pub code: u16,
    pub reason: Box<str>,
    pub reply: tokio::sync::oneshot::Sender<usize>,
}

/// A direct message for the connections of `user`; answered with [`Inbound::Delivered`] to
/// shard `origin`, whose mailbox holds room for the answer.
#[derive(Debug)]
pub struct Direct {
    pub user: Arc<str>,
    pub message: Arc<Published>,
    pub origin: usize,
    pub send: u64,
}

impl Inbound {
    /// The bytes it holds, counted against `server.shard_queue_max_bytes`.
    pub fn bytes(&self) -> usize {
        match self {
            Inbound::Publish(message) => message.frame.len(),
            Inbound::Direct(direct) => direct.message.frame.len(),
            Inbound::Persist(persist) => persist.0.frame.len(),
            Inbound::Delivered { .. } | Inbound::Persisted { .. } => 0,
            Inbound::Broker(message) => message.load().map_or(0, |(bytes, _)| bytes),
            Inbound::Stored { .. }
            | Inbound::Heartbeat { .. }
            | Inbound::Stall { .. }
            | Inbound::Disconnect(_) => 0,
        }
    }

    /// Whether it wakes a shard sleeping until its coalescing release.
    fn is_critical(&self) -> bool {
        match self {
            Inbound::Publish(message) => message.priority == Priority::Critical,
            Inbound::Direct(direct) => direct.message.priority == Priority::Critical,
            Inbound::Persist(persist) => persist.0.priority == Priority::Critical,
            Inbound::Delivered { .. }
            | Inbound::Persisted { .. }
            | Inbound::Stored { .. }
            | Inbound::Heartbeat { .. }
            | Inbound::Stall { .. }
            | Inbound::Disconnect(_) => true,
            Inbound::Broker(message) => message
                .load()
                .is_none_or(|(_, priority)| priority == Priority::Critical),
        }
    }
}

/// One shard's inbound messages from other shards.
#[derive(Debug)]
pub struct Mailbox {
    queue: ArrayQueue<Inbound>,
    /// Control messages (group joins and leaves): never refused, so a leave is never lost. They
    /// are bounded by the connections and their memberships, not by this queue.
    control: SegQueue<Inbound>,
    /// Messages queued or reserved (never more than the queue's capacity, so a reserved push
    /// always finds room), and their frame bytes; both released when a message is popped.
    reserved: AtomicUsize,
    bytes: AtomicUsize,
    max_bytes: usize,
    waker: AtomicWaker,
    /// The owning shard's thread, unparked for `critical` messages: a busy shard may be asleep
    /// until its next coalescing release (see [`super::coalesce::park_until_release`]).
    owner: OnceLock<Thread>,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` messages and `max_bytes` of their frames.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Mailbox {
            queue: ArrayQueue::new(capacity),
            control: SegQueue::new(),
            reserved: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_bytes,
            waker: AtomicWaker::new(),
            owner: OnceLock::new(),
        }
    }

    /// Records the calling thread as the owner (once, when the shard starts).
    pub fn set_owner(&self) {
        let _ = self.owner.set(std::thread::current());
    }

    /// Reserves room for one message of `bytes` frame bytes; false when the queue is full in
    /// messages or in bytes. Follow with [`Mailbox::push_reserved`] or [`Mailbox::cancel`].
    pub fn reserve(&self, bytes: usize) -> bool {
        if !try_increment(&self.reserved, self.queue.capacity()) {
            return false;
        }
        if self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes > self.max_bytes {
            self.cancel(bytes);
            return false;
        }
        true
    }

    /// Gives back a reservation that will not be pushed.
    pub fn cancel(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.reserved.fetch_sub(1, Ordering::AcqRel);
    }

    /// Queues a message room was reserved for and wakes the owner, also from a moderated sleep
    /// when the message is critical.
    pub fn push_reserved(&self, inbound: Inbound) {
        let critical = inbound.is_critical();
        if let Err(inbound) = self.queue.push(inbound) {
            // Unreachable: reservations never exceed the capacity.
            debug_assert!(false, "a reserved push found the queue full");
            return self.cancel(inbound.bytes());
        }
        self.waker.wake();
        if let Some(owner) = self.owner.get().filter(|_| critical) {
            owner.unpark();
        }
    }

    /// Queues a control message (see [`Mailbox`]'s `control`) and wakes the owner.
    pub fn push_control(&self, inbound: Inbound) {
        self.control.push(inbound);
        self.waker.wake();
        if let Some(owner) = self.owner.get() {
            owner.unpark();
        }
    }

    /// Takes a message without waiting: control messages first.
    pub fn try_pop(&self) -> Option<Inbound> {
        if let Some(control) = self.control.pop() {
            return Some(control);
        }
        let inbound = self.queue.pop()?;
        self.cancel(inbound.bytes());
        Some(inbound)
    }

    /// Frame bytes queued or reserved.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Messages queued or reserved, control messages included.
    pub fn queued_messages(&self) -> usize {
        self.reserved.load(Ordering::Relaxed) + self.control.len()
    }

    /// Waits for a message. Only the owning shard calls this.
    pub async fn pop(&self) -> Inbound {
        poll_fn(|cx| {
            if let Some(m) = self.try_pop() {
                return Poll::Ready(m);
            }
            self.waker.register(cx.waker());
            match self.try_pop() {
                Some(m) => Poll::Ready(m),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// Adds one to `counter` unless it is at `max`; the caller gives it back on drop.
pub(super) fn try_increment(counter: &AtomicUsize, max: usize) -> bool {
    if counter.fetch_add(1, Ordering::AcqRel) >= max {
        counter.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(bytes: usize) -> Inbound {
        let frame = Bytes::from(vec![0; bytes]);
        Inbound::Publish(Arc::new(Published::new(
            "c",
            Priority::Normal,
            frame,
            usize::MAX,
        )))
    }

    #[test]
    fn a_queue_slot_stays_small() {
        assert!(std::mem::size_of::<Inbound>() <= 24);
    }

    #[test]
    fn room_is_bounded_in_messages_and_in_bytes_and_freed_by_pops() {
        let mailbox = Mailbox::new(3, 100);
        assert!(mailbox.reserve(60));
        mailbox.push_reserved(message(60));
        assert!(!mailbox.reserve(41), "bytes");
        assert!(mailbox.reserve(20) && mailbox.reserve(20));
        assert!(!mailbox.reserve(0), "messages");
        mailbox.cancel(20);
        mailbox.push_reserved(message(20));
        assert_eq!(mailbox.queued_bytes(), 80);
        assert_eq!(mailbox.try_pop().map(|m| m.bytes()), Some(60));
        assert_eq!(mailbox.queued_bytes(), 20);
        assert!(mailbox.reserve(80));
    }
}
