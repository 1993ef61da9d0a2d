//! The metric cells of each shard and of the store, and the clock delivery latency is measured
//! on.

use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use wsedge_core::broker::{Counters, DeadReason};
use wsedge_core::protocol::envelope::ErrorCode;
use wsedge_core::protocol::Priority;

use super::counter::{Counter, Gauge, Histogram, HistogramSnapshot, BATCH_RECORDS, LATENCY_US};
use super::labels::{
    close_code_index, CloseReason, CLOSE_CODES, DROP_REASONS, LIMITS, OPS, REJECTION_STATUSES,
};
use super::process::thread_cpu_seconds;

/// Microseconds on the process's monotonic clock: [`wsedge_core::message::Published::born_us`]
/// and the write that delivers it read the same clock, on any thread. Never 0.
pub fn now_us() -> u64 {
    us_at(Instant::now())
}

/// [`now_us`] of an instant already read (a write's, which needs no second clock read).
#[inline]
pub fn us_at(at: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    at.saturating_duration_since(start).as_micros() as u64 + 1
}

/// One shard's cells, written by its thread only.
#[derive(Debug)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Its thread's kernel id, for its CPU time (0 until it starts).
    tid: AtomicI32,
    pub connections: Gauge,
    pub upgrades: Counter,
    pub rejections: [Counter; REJECTION_STATUSES.len()],
    pub received: [Counter; OPS.len()],
    pub deliveries: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub write_calls: Counter,
    pub outbox_bytes: Gauge,
    pub dropped: [[Counter; DROP_REASONS.len()]; Priority::ALL.len()],
    pub closes: [[Counter; CLOSE_CODES.len() + 1]; CloseReason::ALL.len()],
    pub errors: [Counter; ErrorCode::ALL.len()],
    pub rate_limited: [Counter; LIMITS.len()],
    /// Publish read → frame written, µs: the oldest message of a write, sampled (see
    /// `Shard::sample_latency`).
    pub delivery_latency: Histogram,
    /// The broker's counts, copied once a second.
    pub redeliveries: Gauge,
    pub dead_letters: [Gauge; DeadReason::ALL.len()],
    pub recoveries: [Gauge; 2],
    pub inbox_messages: Gauge,
    pub inbox_bytes: Gauge,
    pub queue_messages: Gauge,
    pub queue_bytes: Gauge,
}

impl ShardMetrics {
    fn new() -> Self {
        ShardMetrics {
            tid: AtomicI32::new(0),
            connections: Gauge::default(),
            upgrades: Counter::default(),
            rejections: Default::default(),
            received: Default::default(),
            deliveries: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            write_calls: Counter::default(),
            outbox_bytes: Gauge::default(),
            dropped: Default::default(),
            closes: Default::default(),
            errors: Default::default(),
            rate_limited: Default::default(),
            delivery_latency: Histogram::new(LATENCY_US),
            redeliveries: Gauge::default(),
            dead_letters: Default::default(),
            recoveries: Default::default(),
            inbox_messages: Gauge::default(),
            inbox_bytes: Gauge::default(),
            queue_messages: Gauge::default(),
            queue_bytes: Gauge::default(),
        }
    }

    /// Called on the shard's own thread when it starts.
    pub fn set_thread(&self) {
        // SAFETY: gettid has no preconditions.
        self.tid.store(unsafe { libc::gettid() }, Relaxed);
    }

    /// The shard thread's CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        match self.tid.load(Relaxed) {
            0 => 0.0,
            tid => thread_cpu_seconds(tid),
        }
    }

    /// Copies the broker's counts.
    pub fn set_broker(&self, c: &Counters) {
        self.redeliveries.set(c.redeliveries);
        for (gauge, value) in self.dead_letters.iter().zip(c.dead_letters) {
            gauge.set(value);
        }
        for (gauge, value) in self.recoveries.iter().zip(c.recoveries) {
            gauge.set(value);
        }
        self.inbox_messages.set(c.inbox_messages);
        self.inbox_bytes.set(c.inbox_bytes);
        self.queue_messages.set(c.queue_messages);
        self.queue_bytes.set(c.queue_bytes);
    }

    /// Counts a close, with the code it went out with.
    pub fn closed(&self, code: u16, reason: CloseReason) {
        self.closes[reason as usize][close_code_index(code)].inc();
    }

    /// Counts the write of a message (or batch) born at `born_us` (0: not measured).
    #[inline]
    pub fn delivered_at(&self, born_us: u64, now_us: u64) {
        if born_us != 0 {
            self.delivery_latency
                .observe(now_us.saturating_sub(born_us));
        }
    }
}

/// The store thread's cells.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Write batches synced (or failed), their fsync time (µs) and their size (records).
    pub fsync: Histogram,
    pub batch: Histogram,
    pub failures: Counter,
    /// Dead letters held, as of the last write or open.
    pub dead_letters: Gauge,
}

/// Every cell of the server.
#[derive(Debug)]
pub struct Metrics {
    shards: Box<[ShardMetrics]>,
    pub store: StoreMetrics,
}

impl Metrics {
    pub fn new(shards: usize) -> Self {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::new()).collect(),
            store: StoreMetrics {
                fsync: Histogram::new(LATENCY_US),
                batch: Histogram::new(BATCH_RECORDS),
                failures: Counter::default(),
                dead_letters: Gauge::default(),
            },
        }
    }

    pub fn shard(&self, index: usize) -> &ShardMetrics {
        &self.shards[index]
    }

    pub fn shards(&self) -> &[ShardMetrics] {
        &self.shards
    }

    /// Sums `read` over the shards.
    pub fn sum(&self, read: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.shards.iter().map(read).sum()
    }

    /// The shards' delivery latency histograms, merged.
    pub fn delivery_latency(&self) -> HistogramSnapshot {
        let mut merged = self.shards[0].delivery_latency.snapshot();
        for shard in &self.shards[1..] {
            merged.merge(&shard.delivery_latency.snapshot());
        }
        merged
    }
}
