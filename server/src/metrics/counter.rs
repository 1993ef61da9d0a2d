//! The metric cells: a counter, a gauge and a fixed-bucket histogram, each written by one
//! thread (its shard's, or the store's) and read by any at scrape time.
//!
//! A write is a relaxed load and store, not a read-modify-write: with a single writer no update
//! is lost, and no instruction locks the bus on the delivery path. A reader may see a value a
//! moment old, never a torn one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A monotonic total. Only its owner thread calls [`Counter::add`].
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down, set by its owner.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A histogram with fixed upper bounds (in the unit the owner observes, µs or a count), plus
/// the sum and count of observations, as Prometheus histograms are.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound, and one for +Inf; not cumulative (the scrape adds them up).
    buckets: Box<[Counter]>,
    sum: Counter,
}

/// Delivery and fsync latency bounds, in µs: 50 µs to 10 s.
pub const LATENCY_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Store batch sizes, in records.
pub const BATCH_RECORDS: &[u64] = &[1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000];

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum: Counter::default(),
        }
    }

    #[inline]
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].inc();
        self.sum.add(value);
    }

    /// A copy: upper bounds, cumulative counts (the last is the count) and the sum.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.get();
                total
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: self.sum.get(),
        }
    }
}

/// A histogram as read at one moment; several merge by adding.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// Observations at or below each bound, then all of them.
    pub cumulative: Vec<u64>,
    pub sum: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Adds `other` (of the same bounds) to this one.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.cumulative.iter_mut().zip(&other.cumulative) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let h = Histogram::new(&[10, 100]);
        for v in [0, 10, 11, 100, 101, 5_000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![2, 4, 6]);
        assert_eq!(s.sum, 5_222);
    }
}
