//! A single-waiter, shard-local wake-up flag: the `!Send` counterpart of `tokio::sync::Notify`,
//! with no lock and no atomic, for waking one connection task from another on the same shard.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Remembers one notification until the waiter takes it.
#[derive(Default)]
pub struct LocalNotify {
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for LocalNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNotify")
            .field("notified", &self.notified.get())
            .finish_non_exhaustive()
    }
}

impl LocalNotify {
    /// Wakes the waiter, or lets its next [`LocalNotify::notified`] return at once.
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Waits for a notification and consumes it.
    pub async fn notified(&self) {
        poll_fn(|cx| {
            if self.notified.replace(false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}
