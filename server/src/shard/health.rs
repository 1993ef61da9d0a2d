//! Whether the server still moves messages, not merely whether it answers HTTP: every second
//! each shard sends every shard (itself too) a heartbeat through the ordinary cross-shard queue,
//! and shard 0 has the store write and sync a canary. `/health` is degraded when a heartbeat
//! has not arrived for [`STALE_MS`] or the store has not confirmed the canary for as long.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Older than this, a heartbeat or an unconfirmed canary makes the server degraded.
pub const STALE_MS: u64 = 3_000;

/// Heartbeats received and the store's canary.
#[derive(Debug)]
pub struct Health {
    shards: usize,
    /// `beats[to * shards + from]`: when shard `to` last received shard `from`'s heartbeat
    /// (Unix ms).
    beats: Box<[AtomicU64]>,
    /// When the canary in flight was asked for (0: none waiting).
    canary_asked: AtomicU64,
    /// When the store last confirmed a canary (Unix ms).
    canary_confirmed: AtomicU64,
}

impl Health {
    pub fn new(shards: usize, now: u64) -> Self {
        Health {
            shards,
            beats: (0..shards * shards).map(|_| AtomicU64::new(now)).collect(),
            canary_asked: AtomicU64::new(0),
            canary_confirmed: AtomicU64::new(now),
        }
    }

    /// Shard `to` received shard `from`'s heartbeat at `now`.
    pub fn beat(&self, to: usize, from: usize, now: u64) {
        self.beats[to * self.shards + from].store(now, Relaxed);
    }

    /// A canary write is asked for at `now`; one still waiting keeps its older time.
    pub fn ask_canary(&self, now: u64) {
        let _ = self.canary_asked.compare_exchange(0, now, Relaxed, Relaxed);
    }

    /// The store answered the canary: synced (`ok`) or failed (then it stays waiting, and the
    /// next tick asks again).
    pub fn canary_answered(&self, ok: bool, now: u64) {
        if ok {
            self.canary_confirmed.store(now, Relaxed);
            self.canary_asked.store(0, Relaxed);
        }
    }

    /// The oldest heartbeat's age, ms.
    pub fn oldest_beat_ms(&self, now: u64) -> u64 {
        self.beats
            .iter()
            .map(|b| now.saturating_sub(b.load(Relaxed)))
            .max()
            .unwrap_or(0)
    }

    /// How long the canary has waited (ms; 0 when none waits).
    pub fn canary_waiting_ms(&self, now: u64) -> u64 {
        match self.canary_asked.load(Relaxed) {
            0 => 0,
            asked => now.saturating_sub(asked),
        }
    }

    /// Ms since the store last confirmed a canary.
    pub fn canary_age_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.canary_confirmed.load(Relaxed))
    }

    /// What is failing at `now`, one line each; empty when healthy.
    pub fn failing(&self, now: u64) -> Vec<String> {
        let mut failing = Vec::new();
        for to in 0..self.shards {
            for from in 0..self.shards {
                let age = now.saturating_sub(self.beats[to * self.shards + from].load(Relaxed));
                if age > STALE_MS {
                    failing.push(format!(
                        "shard {to} has not received shard {from}'s heartbeat for {:.1} s",
                        age as f64 / 1e3
                    ));
                }
            }
        }
        // A canary is waiting and the last confirmed one is stale: the store has stopped (a
        // stall shows within STALE_MS, as a shard's does). No canary waiting while shard 0,
        // which asks for them, stalls does not blame the store.
        let age = self.canary_age_ms(now);
        if self.canary_waiting_ms(now) > 0 && age > STALE_MS {
            failing.push(format!(
                "the store has not confirmed a write for {:.1} s",
                age as f64 / 1e3
            ));
        }
        failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_heartbeat_or_an_unconfirmed_canary_fails() {
        let h = Health::new(2, 1_000);
        assert!(h.failing(1_000 + STALE_MS).is_empty());
        for to in 0..2 {
            h.beat(to, 0, 5_000);
        }
        // Shard 1 stopped sending.
        let failing = h.failing(5_000);
        assert_eq!(failing.len(), 2, "{failing:?}");
        assert!(failing[0].contains("shard 0 has not received shard 1's"));
        h.beat(0, 1, 5_000);
        h.beat(1, 1, 5_000);
        assert!(h.failing(5_000).is_empty());
        // Shard 0 asks for no canary (it is stalled, say): the store is not blamed.
        assert!(h.failing(5_000).is_empty());
        h.canary_answered(true, 5_000);
        h.ask_canary(5_000);
        h.ask_canary(5_500);
        assert!(h.failing(5_000 + STALE_MS).is_empty());
        for (to, from) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            h.beat(to, from, 8_100);
        }
        h.canary_answered(false, 8_100);
        h.ask_canary(8_100);
        assert!(
            h.failing(8_100)[0].contains("store"),
            "still waiting since 5_000, last confirmed at 5_000"
        );
        h.canary_answered(true, 8_200);
        assert!(h.failing(8_200).is_empty());
        assert_eq!(h.canary_age_ms(8_300), 100);
    }
}
