//! Write coalescing: connections holding deliveries back (see `connection.write_coalesce_us`)
//! wait here, and one timer per shard releases them all together, instead of a timer each. A
//! release first sends out the channel batches of the round (see [`wsedge_core::broker`]).
//!
//! A shard that handled more than [`MODERATE_ABOVE_FRAMES_PER_S`] frames per second since the
//! previous round began is busy, so for this round it stops waking for each frame that arrives:
//! its runtime's park hook, [`park_until_release`], sleeps until the release (at most
//! [`MAX_MODERATED_SLEEP`]) and the shard handles everything that arrived meanwhile at once, as
//! a network card's adaptive interrupt moderation does; what it reads then goes out with that
//! release. A lightly loaded shard never sleeps. Another shard wakes a sleeping
//! one early only for a `critical` message (see [`super::mailbox::Mailbox::push_reserved`]).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::notify::LocalNotify;

/// The longest a busy shard sleeps without looking at its sockets, whatever the coalescing
/// interval: bounds the delay moderation adds to reading a frame.
pub const MAX_MODERATED_SLEEP: Duration = Duration::from_millis(5);

/// Inbound frames and forwarded messages per second (counted from one round's start to the
/// next) above which a shard is busy and moderates its wake-ups during the next round.
pub const MODERATE_ABOVE_FRAMES_PER_S: u64 = 4_000;

/// A shard's held connections.
pub struct Coalescer {
    held: RefCell<Vec<Rc<Conn>>>,
    /// Notified when a round begins: its first connection is held or message batched.
    armed: LocalNotify,
    /// A round has begun and is not released yet.
    pending: Cell<bool>,
    /// When the current (or last) round began.
    round_start: Cell<Instant>,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            held: RefCell::default(),
            armed: LocalNotify::default(),
            pending: Cell::new(false),
            round_start: Cell::new(Instant::now()),
        }
    }
}

impl Coalescer {
    /// Holds `conn` until the next release (at most one interval away).
    pub fn hold(&self, conn: &Rc<Conn>) {
        self.held.borrow_mut().push(conn.clone());
        self.arm();
    }

    /// Begins a round unless one is pending: the next release is at most one interval away.
    pub fn arm(&self) {
        if !self.pending.replace(true) {
            self.armed.notify();
        }
    }

    /// Releases the held connections, after `deliver_batches` has queued the channel batches,
    /// one `interval` after each round began. The release is due at an exact instant: the park
    /// hook wakes the task then, and the tokio timer (whole milliseconds) is the fallback when
    /// the hook is not installed.
    pub async fn run(&self, interval: Duration, deliver_batches: impl Fn()) {
        loop {
            self.armed.notified().await;
            let now = Instant::now();
            let since = now - self.round_start.replace(now);
            BUSY.set(is_busy_rate(FRAMES.replace(0), since));
            let due = now + interval;
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
            // What became ready meanwhile (the sockets a moderated shard did not read while it
            // slept, forwarded messages) runs first, so that it goes out with this release.
            tokio::task::yield_now().await;
            self.pending.set(false);
            deliver_batches();
            for conn in self.held.take() {
                conn.release();
            }
        }
    }
}

thread_local! {
    /// This shard thread's pending release: when it is due, and the coalescer task to wake then.
    static RELEASE: Cell<Option<(Instant, Waker)>> = const { Cell::new(None) };
    /// Inbound frames and forwarded messages this shard thread handled since the round began.
    static FRAMES: Cell<u64> = const { Cell::new(0) };
    /// Whether this shard thread moderates its wake-ups during the pending release's round.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Counts one inbound frame or forwarded message handled by this shard thread.
pub fn count_frame() {
    FRAMES.set(FRAMES.get().saturating_add(1));
}

/// Whether this shard thread is busy: it moderates its wake-ups, and batches channel messages
/// (see [`wsedge_core::broker`]), during the pending round.
pub fn is_busy() -> bool {
    BUSY.get()
}

/// Whether `frames` handled over `since` is more than [`MODERATE_ABOVE_FRAMES_PER_S`].
fn is_busy_rate(frames: u64, since: Duration) -> bool {
    u128::from(frames) * 1_000_000 > u128::from(MODERATE_ABOVE_FRAMES_PER_S) * since.as_micros()
}

/// The shard runtime's `on_thread_park` hook: with a release pending and the shard busy (see
/// [`MODERATE_ABOVE_FRAMES_PER_S`]), sleeps until the release is due (at most
/// [`MAX_MODERATED_SLEEP`]; [`std::thread::Thread::unpark`] ends the sleep early) and wakes the
/// coalescer when it is; the runtime then polls its sockets once and runs everything that became
/// ready. Otherwise it returns at once and the runtime parks as usual, waking for each event.
pub fn park_until_release() {
    if !BUSY.get() {
        return;
    }
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

    #[test]
    fn a_busy_shard_sleeps_until_the_release_and_wakes_the_coalescer() {
        let flag = Arc::new(Flag::default());
        let start = Instant::now();
        RELEASE.set(Some((
            start + Duration::from_millis(2),
            Waker::from(flag.clone()),
        )));
        BUSY.set(true);
        park_until_release();
        assert!(start.elapsed() >= Duration::from_millis(2));
        assert!(flag.0.load(Ordering::SeqCst) && RELEASE.take().is_none());
    }

    #[test]
    fn busy_means_more_frames_per_second_than_the_bound() {
        let second = Duration::from_secs(1);
        assert!(!is_busy_rate(MODERATE_ABOVE_FRAMES_PER_S, second));
        assert!(is_busy_rate(MODERATE_ABOVE_FRAMES_PER_S + 1, second));
        // The same frames are busy over a short round, not after a long quiet spell.
        assert!(!is_busy_rate(100, Duration::from_millis(100)));
        assert!(is_busy_rate(100, Duration::from_millis(2)));
    }

    #[test]
    fn a_quiet_shard_does_not_sleep() {
        let flag = Arc::new(Flag::default());
        let due = Instant::now() + Duration::from_millis(2);
        RELEASE.set(Some((due, Waker::from(flag.clone()))));
        BUSY.set(false);
        park_until_release();
        // Had it slept until the release, it would have woken the coalescer.
        assert!(RELEASE.take().is_some() && !flag.0.load(Ordering::SeqCst));
    }
}
