//! Channel history, kept by each channel's home shard (its presence home): every message
//! published to the channel is numbered there (`offset`, +1 per message) within an `epoch`, kept
//! for `[history] ttl_s` up to `size` messages per channel, and read back by subscribers that
//! recover (`since`) or ask (`history`).
//!
//! The epoch names one unbroken run of offsets: a new one starts whenever the channel's history
//! is lost (a restart of a memory-only server, or the channel forgotten after it had neither
//! messages nor subscribers for `ttl_s`). A recovery from another epoch, or from an offset whose
//! successors are no longer all kept, recovers nothing (never a part).
//!
//! With `durable`, a message is written to the store before it is kept, published or confirmed
//! ([`History::assign`], then [`History::keep`] once the store says so), and what is dropped is
//! deleted there too ([`History::take_dropped`]); a restart reads the channels back with their
//! epochs ([`History::restore`]). A write that fails starts a new epoch: the run is broken.
//!
//! Memory: the messages are bounded by `max_bytes` (this shard's share of `[history]
//! max_bytes`; the oldest go first, as with `ttl_s`); a channel without messages is kept while
//! it has subscribers, else for `ttl_s`, and sooner forgotten when the channels would take more
//! than `max_bytes` at [`CHANNEL_BYTES`] each.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::config::HistoryConfig;
use crate::message::Published;
pub use crate::protocol::envelope::Position;

/// What one channel's state counts against `max_bytes` (its name, epoch and ring), so that
/// channels without messages (made by subscribes and reads) are bounded too.
const CHANNEL_BYTES: usize = 256;

/// What a reader gets: the channel's epoch and last offset, the messages, and whether its
/// `since` could be honoured (`None` without one).
#[derive(Debug, Clone)]
pub struct Read {
    pub epoch: Arc<str>,
    pub offset: u64,
    pub messages: Vec<Arc<Published>>,
    pub recovered: Option<bool>,
}

/// Equal when they name the same position and hold the very same messages.
impl PartialEq for Read {
    fn eq(&self, other: &Read) -> bool {
        let same = |a: &Arc<Published>, b: &Arc<Published>| Arc::ptr_eq(a, b);
        (&self.epoch, self.offset, self.recovered) == (&other.epoch, other.offset, other.recovered)
            && self.messages.len() == other.messages.len()
            && self
                .messages
                .iter()
                .zip(&other.messages)
                .all(|(a, b)| same(a, b))
    }
}

impl Eq for Read {}

#[derive(Debug)]
struct Log {
    epoch: Arc<str>,
    /// The last offset given (0: none yet).
    top: u64,
    /// The last offset kept: the readers' position (below `top` while writes are in flight).
    kept: u64,
    ring: VecDeque<(u64, Arc<Published>)>,
    /// Last publish or read (Unix ms).
    touched: u64,
}

/// The histories of the channels whose home is this shard.
#[derive(Debug)]
pub(super) struct History {
    config: HistoryConfig,
    /// Start of the server (µs) and shard: epochs are unique across restarts and shards.
    boot: u64,
    shard: usize,
    next_epoch: u64,
    logs: HashMap<Arc<str>, Log>,
    /// (published at, channel, offset), oldest first: for `ttl_s` and `max_bytes`.
    order: VecDeque<(u64, Arc<str>, u64)>,
    bytes: usize,
    /// Messages kept, all channels together.
    kept: usize,
    /// When the channels without messages are next looked at.
    next_sweep: u64,
    /// Durable: (channel, offset) of the messages dropped, to delete from the store.
    dropped: Vec<(Arc<str>, u64)>,
    /// Reads with `since`: `[recovered, not recovered]`.
    recoveries: [u64; 2],
}

/// A message of a channel as read back from the store: (channel, offset, epoch, published at
/// (Unix ms), the message).
pub type Restored = (Arc<str>, u64, Arc<str>, u64, Arc<Published>);

impl History {
    pub(super) fn new(config: HistoryConfig, boot: u64, shard: usize) -> Self {
        History {
            config,
            boot,
            shard,
            next_epoch: 0,
            logs: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            kept: 0,
            next_sweep: 0,
            dropped: Vec::new(),
            recoveries: [0; 2],
        }
    }

    /// How long messages are kept (ms).
    pub(super) fn ttl_ms(&self) -> u64 {
        self.config.ttl_ms
    }

    /// Whether messages are written to the store (`[history] durable`).
    pub(super) fn durable(&self) -> bool {
        self.config.durable
    }

    pub(super) fn enabled(&self) -> bool {
        self.config.size > 0
    }

    fn new_epoch(&mut self) -> Arc<str> {
        self.next_epoch += 1;
        format!("{:x}-{:x}-{:x}", self.boot, self.shard, self.next_epoch).into()
    }

    fn log(&mut self, channel: &str, now: u64) -> &mut Log {
        if !self.logs.contains_key(channel) {
            let log = Log {
                epoch: self.new_epoch(),
                top: 0,
                kept: 0,
                ring: VecDeque::new(),
                touched: now,
            };
            self.logs.insert(channel.into(), log);
            if self.next_sweep == 0 {
                self.next_sweep = now.saturating_add(self.config.ttl_ms);
            }
        }
        let log = self.logs.get_mut(channel).expect("present");
        log.touched = now;
        log
    }

    /// Numbers the next message of `channel`, built by `build` from its epoch and offset, and
    /// keeps it (history in memory).
    pub(super) fn record(
        &mut self,
        channel: &str,
        now: u64,
        build: impl FnOnce(&str, u64) -> Arc<Published>,
    ) -> Arc<Published> {
        let (epoch, offset) = self.assign(channel, now);
        let message = build(&epoch, offset);
        self.keep(channel, &epoch, offset, message.clone(), now);
        message
    }

    /// Gives the next offset of `channel` (to a message not kept yet): its epoch and offset.
    pub(super) fn assign(&mut self, channel: &str, now: u64) -> (Arc<str>, u64) {
        let log = self.log(channel, now);
        log.top += 1;
        (log.epoch.clone(), log.top)
    }

    /// Keeps message `offset` of `channel` (given by [`History::assign`] in `epoch`, in order),
    /// which readers see from now on. False when the channel has been forgotten or has started
    /// another epoch since: the message belongs to no history now.
    pub(super) fn keep(
        &mut self,
        channel: &str,
        epoch: &str,
        offset: u64,
        message: Arc<Published>,
        now: u64,
    ) -> bool {
        let size = self.config.size;
        let Some(log) = self.logs.get_mut(channel).filter(|l| *l.epoch == *epoch) else {
            return false;
        };
        log.touched = now;
        log.kept = offset;
        let bytes = message.frame.len();
        log.ring.push_back((offset, message));
        let mut freed = 0;
        let mut trimmed = 0;
        while log.ring.len() > size {
            if let Some((old_offset, old)) = log.ring.pop_front() {
                freed += old.frame.len();
                trimmed += 1;
                if self.config.durable {
                    self.dropped.push((channel.into(), old_offset));
                }
            }
        }
        self.bytes = self.bytes + bytes - freed;
        self.kept = self.kept + 1 - trimmed;
        self.order.push_back((now, channel.into(), offset));
        self.evict(now);
        // Messages trimmed by `size` leave stale entries in `order`; drop them once they
        // outnumber the live ones.
        if self.order.len() > 2 * self.kept + 1024 {
            let logs = &self.logs;
            self.order.retain(|(_, channel, offset)| {
                logs.get(channel)
                    .and_then(|log| log.ring.front())
                    .is_some_and(|(first, _)| first <= offset)
            });
        }
        true
    }

    /// A write of `channel`'s history in `epoch` failed: its run of offsets is broken, so the
    /// channel starts a new epoch (and what it kept goes).
    pub(super) fn lose(&mut self, channel: &str, epoch: &str) {
        let fresh = self.new_epoch();
        let Some(log) = self.logs.get_mut(channel).filter(|l| *l.epoch == *epoch) else {
            return;
        };
        for (offset, old) in log.ring.drain(..) {
            self.bytes -= old.frame.len();
            self.kept -= 1;
            self.dropped.push((channel.into(), offset));
        }
        log.epoch = fresh;
        log.top = 0;
        log.kept = 0;
    }

    /// Durable: the messages dropped since the last call, to delete from the store.
    pub(super) fn take_dropped(&mut self) -> Vec<(Arc<str>, u64)> {
        std::mem::take(&mut self.dropped)
    }

    /// Puts back what the store held (before the server serves): per channel, the run of the
    /// epoch written last, without what `ttl_s` has expired at `now`. The rest is dropped.
    pub(super) fn restore(&mut self, mut messages: Vec<Restored>, now: u64) {
        let mut latest: HashMap<Arc<str>, (u64, Arc<str>)> = HashMap::new();
        for (channel, _, epoch, at, _) in &messages {
            let newest = latest
                .entry(channel.clone())
                .or_insert((*at, epoch.clone()));
            if *at > newest.0 {
                *newest = (*at, epoch.clone());
            }
        }
        messages.sort_by_key(|m| m.3);
        for (channel, offset, epoch, at, message) in messages {
            let current = latest.get(&channel).is_some_and(|(_, e)| *e == epoch);
            if !current {
                self.dropped.push((channel, offset));
                continue;
            }
            let log = self.logs.entry(channel.clone()).or_insert_with(|| Log {
                epoch,
                top: 0,
                kept: 0,
                ring: VecDeque::new(),
                touched: now,
            });
            log.top = log.top.max(offset);
            log.kept = log.top;
            if at.saturating_add(self.config.ttl_ms) <= now {
                self.dropped.push((channel, offset));
                continue;
            }
            let at_ring = log.ring.partition_point(|(o, _)| *o < offset);
            self.bytes += message.frame.len();
            self.kept += 1;
            log.ring.insert(at_ring, (offset, message));
            self.order.push_back((at, channel, offset));
        }
        for (channel, log) in self.logs.iter_mut() {
            while log.ring.len() > self.config.size {
                if let Some((offset, old)) = log.ring.pop_front() {
                    self.bytes -= old.frame.len();
                    self.kept -= 1;
                    self.dropped.push((channel.clone(), offset));
                }
            }
        }
        if !self.logs.is_empty() && self.next_sweep == 0 {
            self.next_sweep = now.saturating_add(self.config.ttl_ms);
        }
        self.evict(now);
    }

    /// The channel's position and, with `since`, what came after it (all or nothing), at most
    /// `limit` messages; without `since`, the last `limit` kept. A channel not known yet starts
    /// an epoch at offset 0.
    pub(super) fn read(
        &mut self,
        channel: &str,
        since: Option<&Position>,
        limit: usize,
        now: u64,
    ) -> Read {
        let log = self.log(channel, now);
        let first_kept = log.ring.front().map_or(log.kept + 1, |(offset, _)| *offset);
        let (messages, recovered) = match since {
            None => {
                let skip = log.ring.len().saturating_sub(limit);
                let all = log.ring.iter().skip(skip).map(|(_, m)| m.clone()).collect();
                (all, None)
            }
            Some(p) => {
                let complete = p.offset + 1 >= first_kept;
                if *p.epoch == *log.epoch && p.offset <= log.kept && complete {
                    let after = log.ring.iter().filter(|(offset, _)| *offset > p.offset);
                    (
                        after.take(limit).map(|(_, m)| m.clone()).collect(),
                        Some(true),
                    )
                } else {
                    (Vec::new(), Some(false))
                }
            }
        };
        let read = Read {
            epoch: log.epoch.clone(),
            offset: log.kept,
            messages,
            recovered,
        };
        if let Some(recovered) = recovered {
            self.recoveries[usize::from(!recovered)] += 1;
        }
        read
    }

    /// Reads with `since` so far: `[recovered, not recovered]`.
    pub(super) fn recoveries(&self) -> [u64; 2] {
        self.recoveries
    }

    /// When [`History::expire`] must next run.
    pub(super) fn next_timeout(&self) -> Option<u64> {
        let oldest = self
            .order
            .front()
            .map(|(at, _, _)| at.saturating_add(self.config.ttl_ms));
        let sweep = (self.next_sweep > 0).then_some(self.next_sweep);
        oldest.into_iter().chain(sweep).min()
    }

    /// Channels known.
    #[cfg(test)]
    pub(super) fn channels(&self) -> usize {
        self.logs.len()
    }

    /// Whether the channels it knows take more than their share of `max_bytes` (each counts
    /// [`CHANNEL_BYTES`]): then [`History::forget_idle`] must run before another is added.
    pub(super) fn crowded(&self) -> bool {
        (self.logs.len() + 1) * CHANNEL_BYTES > self.config.max_bytes
    }

    /// Forgets at once the channels with no message that `subscribed` says have no subscribers.
    pub(super) fn forget_idle(&mut self, subscribed: impl Fn(&str) -> bool) {
        self.logs
            .retain(|channel, log| !log.ring.is_empty() || subscribed(channel));
    }

    /// Drops the messages older than `ttl_s`, and the channels with no message left that
    /// `subscribed` says have no subscribers and were not touched for `ttl_s`.
    pub(super) fn expire(&mut self, now: u64, subscribed: impl Fn(&str) -> bool) {
        self.evict(now);
        if self.next_sweep == 0 || now < self.next_sweep {
            return;
        }
        let ttl = self.config.ttl_ms;
        self.logs.retain(|channel, log| {
            !log.ring.is_empty() || subscribed(channel) || log.touched.saturating_add(ttl) > now
        });
        self.next_sweep = match self.logs.is_empty() {
            true => 0,
            false => now.saturating_add(ttl),
        };
    }

    /// Drops the oldest messages while they are older than `ttl_s` or over `max_bytes`.
    fn evict(&mut self, now: u64) {
        while let Some((at, channel, offset)) = self.order.front() {
            let expired = at.saturating_add(self.config.ttl_ms) <= now;
            if !expired && self.bytes <= self.config.max_bytes {
                break;
            }
            if let Some(log) = self.logs.get_mut(channel) {
                if log.ring.front().is_some_and(|(o, _)| o == offset) {
                    let (offset, old) = log.ring.pop_front().expect("present");
                    self.bytes -= old.frame.len();
                    self.kept -= 1;
                    if self.config.durable {
                        self.dropped.push((channel.clone(), offset));
                    }
                }
            }
            self.order.pop_front();
        }
    }
}
