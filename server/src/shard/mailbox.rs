//! A shard's inbound queue: a bounded lock-free MPMC queue (crossbeam `ArrayQueue`) plus an
//! `AtomicWaker` so the owning shard sleeps until another shard pushes.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::message::Published;

/// One shard's inbound messages from other shards.
#[derive(Debug)]
pub struct Mailbox {
    queue: ArrayQueue<Arc<Published>>,
    waker: AtomicWaker,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            queue: ArrayQueue::new(capacity),
            waker: AtomicWaker::new(),
        }
    }

    /// Queues a message and wakes the owner; gives it back when the queue is full.
    pub fn push(&self, message: Arc<Published>) -> Result<(), Arc<Published>> {
        self.queue.push(message)?;
        self.waker.wake();
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
