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
}

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
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.config.size > 0
    }

    fn log(&mut self, channel: &str, now: u64) -> &mut Log {
        if !self.logs.contains_key(channel) {
            self.next_epoch += 1;
            let epoch = format!("{:x}-{:x}-{:x}", self.boot, self.shard, self.next_epoch);
            let log = Log {
                epoch: epoch.into(),
                top: 0,
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
    /// keeps it.
    pub(super) fn record(
        &mut self,
        channel: &str,
        now: u64,
        build: impl FnOnce(&str, u64) -> Arc<Published>,
    ) -> Arc<Published> {
        let size = self.config.size;
        let log = self.log(channel, now);
        log.top += 1;
        let offset = log.top;
        let message = build(&log.epoch, offset);
        log.ring.push_back((offset, message.clone()));
        let mut freed = 0;
        let mut trimmed = 0;
        while log.ring.len() > size {
            if let Some((_, old)) = log.ring.pop_front() {
                freed += old.frame.len();
                trimmed += 1;
            }
        }
        self.bytes = self.bytes + message.frame.len() - freed;
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
        message
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
        let first_kept = log.ring.front().map_or(log.top + 1, |(offset, _)| *offset);
        let (messages, recovered) = match since {
            None => {
                let skip = log.ring.len().saturating_sub(limit);
                let all = log.ring.iter().skip(skip).map(|(_, m)| m.clone()).collect();
                (all, None)
            }
            Some(p) => {
                let complete = p.offset + 1 >= first_kept;
                if *p.epoch == *log.epoch && p.offset <= log.top && complete {
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
        Read {
            epoch: log.epoch.clone(),
            offset: log.top,
            messages,
            recovered,
        }
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
                    let (_, old) = log.ring.pop_front().expect("present");
                    self.bytes -= old.frame.len();
                    self.kept -= 1;
                }
            }
            self.order.pop_front();
        }
    }
}
