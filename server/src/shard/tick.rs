//! A shard's once-a-second work: return freed memory to the OS, send its heartbeats, sample the
//! metrics that are not counted as they happen, and (shard 0) ask the store for a canary write.

use std::time::Duration;

use super::mailbox::Inbound;
use super::Shard;
use crate::conn::unix_ms;

/// Channels a shard counts publishes of between two ticks; new ones past it wait.
pub const MAX_COUNTED_CHANNELS: usize = 4096;
/// Channels a shard reports each tick.
const TOP: usize = 10;

/// How often a shard ticks.
pub const TICK: Duration = Duration::from_secs(1);

impl Shard {
    /// Ticks every [`TICK`] until the shard stops.
    pub async fn run_tick(&self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            return_memory();
            let now = unix_ms();
            self.send_heartbeats();
            self.sample();
            if self.index == 0 && !self.canary.get() {
                self.ask_canary(now);
            }
        }
    }

    /// Sends every shard, this one too, a heartbeat through its ordinary queue; a full queue
    /// gets none (its shard is not keeping up, and `/health` should say so).
    fn send_heartbeats(&self) {
        for mailbox in self.shared.mailboxes.iter() {
            if mailbox.reserve(0) {
                mailbox.push_reserved(Inbound::Heartbeat { from: self.index });
            }
        }
    }

    /// Counts a publish to `channel` (for the dashboard's busiest channels).
    pub fn count_channel(&self, channel: &str) {
        let mut counts = self.channel_counts.borrow_mut();
        if let Some(count) = counts.get_mut(channel) {
            *count += 1;
        } else if counts.len() < MAX_COUNTED_CHANNELS {
            counts.insert(channel.into(), 1);
        }
    }

    /// Sets the sampled metrics: the outboxes' bytes, the broker's counts, the busiest
    /// channels.
    fn sample(&self) {
        let mut counts: Vec<_> = self.channel_counts.take().into_iter().collect();
        counts.sort_unstable_by_key(|c| std::cmp::Reverse(c.1));
        counts.truncate(TOP);
        self.shared.top_channels[self.index].store(std::sync::Arc::new(counts));
        let metrics = self.metrics();
        let outboxes = self
            .conns
            .borrow()
            .values()
            .map(|c| c.queued_bytes())
            .sum::<usize>();
        metrics.outbox_bytes.set(outboxes as u64);
        metrics.set_broker(&self.broker.borrow().counters());
    }

    /// Has the store write and sync an empty batch, answered as token `8n + 5`.
    fn ask_canary(&self, now: u64) {
        let health = &self.shared.health;
        health.ask_canary(now);
        let token = 8 * (now / 1000) + 5;
        if self
            .shared
            .store
            .submit(self.index, Some(token), Vec::new())
        {
            self.canary.set(true);
        }
    }

    /// The store confirmed (or failed) the write made with `token`: shard 0's canary (tokens
    /// `8n + 5`), else the broker's (`8n + 1..=4`).
    pub(super) fn stored(&self, token: u64, ok: bool) {
        if token % 8 == 5 {
            self.canary.set(false);
            return self.shared.health.canary_answered(ok, unix_ms());
        }
        self.broker(|broker, out| broker.stored(token, ok, unix_ms(), out));
    }
}

/// Returns the memory this shard thread's allocator heap holds but no longer uses to the OS.
/// mimalloc purges freed pages only when the thread that owns them calls into it again (frees
/// from other shards wait in its queue until then), so after a burst a quiet shard would keep
/// its peak forever without this.
fn return_memory() {
    // Not forced: it runs the purges that are due (measured: as low as a forced collection
    // after a flood, see results/).
    // SAFETY: mi_collect only walks this thread's own heap; it takes no pointer.
    unsafe { libmimalloc_sys::mi_collect(false) };
}
