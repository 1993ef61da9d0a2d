//! Write coalescing: connections holding deliveries back (see `connection.write_coalesce_us`)
//! wait here, and one timer per shard releases them all together, instead of a timer each.
//!
//! While a release is pending the shard is busy by definition, so it also stops waking for each
//! frame that arrives: its runtime's park hook, [`park_until_release`], sleeps until the release
//! (at most [`MAX_MODERATED_SLEEP`]) and the shard then handles everything that arrived at once,
//! as a network card's interrupt moderation does. Another shard wakes it early only for a
//! `critical` message (see [`crate::shard::mailbox::Mailbox::push`]).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::connection::Conn;
use crate::notify::LocalNotify;

/// The longest a busy shard sleeps without looking at its sockets, whatever the coalescing
/// interval: bounds the delay moderation adds to reading a frame.
pub const MAX_MODERATED_SLEEP: Duration = Duration::from_millis(5);

/// Where a connection stands with coalescing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hold {
    /// Writes when it has something to write (unless it wrote within the interval).
    #[default]
    Free,
    /// Waiting for the shard's next release.
    Held,
    /// Released: writes what it has, then is free again.
    Released,
}

/// A shard's held connections.
#[derive(Default)]
pub struct Coalescer {
    held: RefCell<Vec<Rc<Conn>>>,
    /// Notified when the first connection of a round is held.
    armed: LocalNotify,
}

impl Coalescer {
    /// Holds `conn` until the next release (at most one interval away).
    pub fn hold(&self, conn: &Rc<Conn>) {
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            self.armed.notify();
        }
        held.push(conn.clone());
    }

    /// Releases the held connections one `interval` after the first of each round was held.
    /// The release is due at an exact instant: the park hook wakes the task then, and the tokio
    /// timer (whole milliseconds) is the fallback when the hook is not installed.
    pub async fn run(&self, interval: Duration) {
        loop {
            self.armed.notified().await;
            let due = Instant::now() + interval;
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = poll_fn(|cx| {
                    if Instant::now() >= due {
                        return Poll::Ready(());
                    }
                    RELEASE.set(Some((due, cx.waker().clone())));
                    Poll::Pending
                }) => {}
            }
            RELEASE.take();
            for conn in self.held.take() {
                conn.release();
            }
        }
    }
}

thread_local! {
    /// This shard thread's pending release: when it is due, and the coalescer task to wake then.
    static RELEASE: Cell<Option<(Instant, Waker)>> = const { Cell::new(None) };
}

/// The shard runtime's `on_thread_park` hook: with a release pending, sleeps until it is due
/// (at most [`MAX_MODERATED_SLEEP`]; [`std::thread::Thread::unpark`] ends the sleep early) and
/// wakes the coalescer when it is; the runtime then polls its sockets once and runs everything
/// that became ready. Without a pending release it returns at once and the runtime parks as
/// usual, waking for each event.
pub fn park_until_release() {
    let Some((due, waker)) = RELEASE.take() else {
        return;
    };
    let now = Instant::now();
    if due > now {
        std::thread::park_timeout((due - now).min(MAX_MODERATED_SLEEP));
    }
    if Instant::now() >= due {
        waker.wake();
    } else {
        RELEASE.set(Some((due, waker)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Runs the hook on this test's thread with a release due `after` from now. Returns
    /// (coalescer woken, release still pending, time spent in the hook).
    fn hook_with_release_in(after: Duration) -> (bool, bool, Duration) {
        let flag = Arc::new(Flag::default());
        RELEASE.set(Some((Instant::now() + after, Waker::from(flag.clone()))));
        let start = Instant::now();
        park_until_release();
        let spent = start.elapsed();
        let pending = RELEASE.take().is_some();
        (flag.0.load(Ordering::SeqCst), pending, spent)
    }

    #[test]
    fn a_due_release_wakes_the_coalescer() {
        let (woken, pending, spent) = hook_with_release_in(Duration::from_millis(2));
        assert!(woken && !pending);
        assert!(
            spent >= Duration::from_millis(2),
            "returned after {spent:?}"
        );
    }

    #[test]
    fn a_distant_release_sleeps_at_most_the_moderation_bound() {
        let (woken, pending, spent) = hook_with_release_in(Duration::from_secs(60));
        assert!(!woken && pending);
        assert!(spent < Duration::from_secs(30), "slept {spent:?}");
    }

    #[test]
    fn without_a_release_the_hook_returns_at_once() {
        let start = Instant::now();
        park_until_release();
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
