//! Sub-millisecond wake-ups for the senders' schedules.
//!
//! tokio's timer fires on whole-millisecond ticks, rounded up, and its driver then sleeps in
//! whole milliseconds too: a sender sleeping until its due time sent 0–2 ms late (about 1 ms at
//! the median). That lag is the client's, yet it was part of every latency measured from the
//! intended send time; at low rates it was most of it. [`sleep_until`] leaves the last
//! [`COARSE`] of a sleep to one thread per process that sleeps with a nanosecond timeout and
//! timer slack of 1 ns, then wakes the task. That hand-off takes tens of microseconds, so the
//! thread fires early by its measured average and the task yields to the runtime until the
//! deadline: the send goes out within microseconds of its due time, never before it.
//!
//! The thread holds one entry per sleeping task (at most one per sender), so its heap is bounded
//! by the number of users; a task dropped mid-sleep leaves an entry that is discarded when due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The most a wake-up is sent ahead of its deadline, to cover the hand-off to the task (the
/// task then yields until the deadline, so this bounds that spin).
const MAX_LEAD: Duration = Duration::from_micros(200);

/// How much of a sleep is left to the precise thread; the rest is tokio's timer (which may be up
/// to 2 ms late, so the task is then handed over in time).
const COARSE: Duration = Duration::from_millis(3);

/// Sleeps until `deadline`, waking within tens of microseconds of it (never before it).
pub async fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if deadline - now > COARSE {
        tokio::time::sleep_until((deadline - COARSE).into()).await;
    }
    // Fire early by the time a wake-up takes to reach a task, so the task resumes about on time.
    let lead = Duration::from_nanos(LEAD_NS.load(Ordering::Relaxed));
    let (tx, rx) = oneshot::channel();
    add(deadline.checked_sub(lead).unwrap_or(deadline), tx);
    if let Ok(fired) = rx.await {
        let took = fired.elapsed().as_nanos().min(MAX_LEAD.as_nanos()) as u64;
        // An exponential average over about 16 wake-ups.
        let lead = (LEAD_NS.load(Ordering::Relaxed) * 15 + took) / 16;
        LEAD_NS.store(lead, Ordering::Relaxed);
    }
    // Woken early: yield to the runtime for the last few microseconds.
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// One sleeping task: woken (through its channel) at `at`; `seq` orders equal instants.
struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<Instant>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The sleeping tasks, earliest first.
struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    heap: BinaryHeap::new(),
    seq: 0,
});

/// How long a wake-up takes to resume its task, averaged (ns; at most [`MAX_LEAD`]).
static LEAD_NS: AtomicU64 = AtomicU64::new(0);

/// The thread serving [`QUEUE`], started by the first precise sleep.
fn thread() -> &'static Thread {
    static THREAD: OnceLock<Thread> = OnceLock::new();
    THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("loadtest-timer".into())
            .spawn(serve)
            .expect("spawn the timer thread")
            .thread()
            .clone()
    })
}

fn add(at: Instant, wake: oneshot::Sender<Instant>) {
    let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    let seq = queue.seq;
    queue.seq += 1;
    let earliest = queue.heap.peek().is_none_or(|Reverse(e)| at < e.at);
    queue.heap.push(Reverse(Entry { at, seq, wake }));
    drop(queue);
    if earliest {
        thread().unpark();
    }
}

/// Wakes each entry when due (with the time it fired); sleeps until the earliest, or until an
/// earlier one is added.
fn serve() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and only affects this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    loop {
        let next = {
            let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            while queue.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                if let Some(Reverse(entry)) = queue.heap.pop() {
                    let _ = entry.wake.send(now);
                }
            }
            queue.heap.peek().map(|Reverse(e)| e.at - now)
        };
        match next {
            Some(wait) => std::thread::park_timeout(wait),
            None => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However early the thread fires (its lead), no sleeper resumes before its deadline, and
    /// sleepers added out of order are all woken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_wakes_before_the_deadline() {
        // The longest lead: the thread fires each 200 µs before its deadline.
        LEAD_NS.store(MAX_LEAD.as_nanos() as u64, Ordering::Relaxed);
        let start = Instant::now();
        let sleepers: Vec<_> = (0..200u64)
            .map(|i| {
                // Deadlines 0–8 ms ahead, out of order, some below and some above COARSE.
                let deadline = start + Duration::from_micros((i * 7_919) % 8_000);
                tokio::spawn(async move {
                    sleep_until(deadline).await;
                    Instant::now() >= deadline
                })
            })
            .collect();
        for sleeper in sleepers {
            assert!(
                sleeper.await.unwrap(),
                "a sleeper resumed before its deadline"
            );
        }
    }
}
