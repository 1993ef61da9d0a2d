//! A shard's inbound queue: a bounded lock-free MPMC queue (crossbeam `ArrayQueue`) plus an
//! `AtomicWaker` so the owning shard sleeps until another shard pushes.

use std::future::poll_fn;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::thread::Thread;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::message::Published;
use crate::protocol::Priority;

/// One shard's inbound messages from other shards.
#[derive(Debug)]
pub struct Mailbox {
    queue: ArrayQueue<Arc<Published>>,
    waker: AtomicWaker,
    /// The owning shard's thread, unparked for `critical` messages: a busy shard may be asleep
    /// until its next coalescing release (see [`crate::shard::coalesce::park_until_release`]).
    owner: OnceLock<Thread>,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            queue: ArrayQueue::new(capacity),
            waker: AtomicWaker::new(),
            owner: OnceLock::new(),
        }
    }

    /// Records the calling thread as the owner (once, when the shard starts).
    pub fn set_owner(&self) {
        let _ = self.owner.set(std::thread::current());
    }

    /// Queues a message and wakes the owner, also from a moderated sleep when the message is
    /// critical; gives it back when the queue is full.
    pub fn push(&self, message: Arc<Published>) -> Result<(), Arc<Published>> {
        let critical = message.priority == Priority::Critical;
        self.queue.push(message)?;
        self.waker.wake();
        if let Some(owner) = self.owner.get().filter(|_| critical) {
            owner.unpark();
        }
        Ok(())
    }

    /// Takes a message without waiting.
    pub fn try_pop(&self) -> Option<Arc<Published>> {
        self.queue.pop()
    }

    /// Waits for a message. Only the owning shard calls this.
    pub async fn pop(&self) -> Arc<Published> {
        poll_fn(|cx| {
            if let Some(m) = self.queue.pop() {
                return Poll::Ready(m);
            }
            self.waker.register(cx.waker());
            match self.queue.pop() {
                Some(m) => Poll::Ready(m),
                None => Poll::Pending,
            }
        })
        .await
    }
}
