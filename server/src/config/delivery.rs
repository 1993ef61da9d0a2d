//! `[store]` (the embedded durable store) and the sections of acknowledged delivery: `[ack]`,
//! `[inbox]` and `[dedup]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wsedge_core::broker::{DeliveryConfig, HistoryConfig};

use super::error::{invalid, positive, ConfigError};

/// Default `store.path`: the store's directory, relative to the working directory.
pub const DEFAULT_STORE_PATH: &str = "data";
/// Default `store.durability`.
pub const DEFAULT_DURABILITY: &str = "fsync";
/// Default `store.group_commit_us`: a write waits at most this long for others to share its fsync.
pub const DEFAULT_GROUP_COMMIT_US: u64 = 2_000;
/// Default `store.group_commit_records`: a commit takes at most this many requests.
pub const DEFAULT_GROUP_COMMIT_RECORDS: usize = 1_000;
/// Default `store.sync_interval_ms` (`durability = "os"`): how often the OS is made to write.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 1_000;
/// Default `store.queue_max_bytes`: bytes waiting for the store thread; past it a persisted send
/// is refused with `overloaded`.
pub const DEFAULT_STORE_QUEUE_MAX_BYTES: usize = 64 << 20;
/// Default `ack.wait_ms`.
pub const DEFAULT_ACK_WAIT_MS: u64 = 30_000;
/// Default `ack.backoff_ms`.
pub const DEFAULT_ACK_BACKOFF_MS: [u64; 3] = [1_000, 5_000, 30_000];
/// Default `ack.max_deliver`.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// Default `ack.max_pending`.
pub const DEFAULT_MAX_PENDING: usize = 1_000;
/// Default `inbox.ttl_s`: seven days.
pub const DEFAULT_INBOX_TTL_S: u64 = 604_800;
/// Default `inbox.max_messages` per user.
pub const DEFAULT_INBOX_MAX_MESSAGES: usize = 10_000;
/// Default `inbox.max_bytes`: message bytes all inboxes hold in memory together (1 GiB).
pub const DEFAULT_INBOX_MAX_BYTES: usize = 1 << 30;
/// Default `dedup.window_s`.
pub const DEFAULT_DEDUP_WINDOW_S: u64 = 120;
/// Default `dedup.max_entries`: `msg_id`s remembered at most (about 100-400 bytes each).
pub const DEFAULT_DEDUP_MAX_ENTRIES: usize = 1_000_000;

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After `fdatasync`: survives a process crash and a power loss.
    Fsync,
    /// After the write reached the OS; synced every `sync_interval_ms`: survives a process crash,
    /// loses up to that interval on a power loss.
    Os,
}

/// The validated `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub durability: Durability,
    pub group_commit: Duration,
    pub group_commit_records: usize,
    pub sync_interval: Duration,
    pub queue_max_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    pub path: String,
    pub durability: String,
    pub group_commit_us: u64,
    pub group_commit_records: usize,
    pub sync_interval_ms: u64,
    pub queue_max_bytes: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            path: DEFAULT_STORE_PATH.into(),
            durability: DEFAULT_DURABILITY.into(),
            group_commit_us: DEFAULT_GROUP_COMMIT_US,
            group_commit_records: DEFAULT_GROUP_COMMIT_RECORDS,
            sync_interval_ms: DEFAULT_SYNC_INTERVAL_MS,
            queue_max_bytes: DEFAULT_STORE_QUEUE_MAX_BYTES,
        }
    }
}

impl StoreSection {
    pub(super) fn validate(&self, max_message_size: usize) -> Result<StoreConfig, ConfigError> {
        if self.path.is_empty() {
            return Err(invalid("store.path", "must name a directory".into()));
        }
        let durability = match self.durability.as_str() {
            "fsync" => Durability::Fsync,
            "os" => Durability::Os,
            other => {
                return Err(invalid(
                    "store.durability",
                    format!("{other:?} is not \"fsync\" or \"os\""),
                ))
            }
        };
        if self.group_commit_us > 1_000_000 {
            return Err(invalid(
                "store.group_commit_us",
                format!("{} is more than 1000000 (1 s)", self.group_commit_us),
            ));
        }
        positive(
            "store.group_commit_records",
            self.group_commit_records as u64,
        )?;
        let sync = positive("store.sync_interval_ms", self.sync_interval_ms)?;
        if self.queue_max_bytes < 2 * max_message_size {
            return Err(invalid(
                "store.queue_max_bytes",
                format!(
                    "{} must hold two messages of connection.max_message_size ({max_message_size})",
                    self.queue_max_bytes
                ),
            ));
        }
        Ok(StoreConfig {
            path: PathBuf::from(&self.path),
            durability,
            group_commit: Duration::from_micros(self.group_commit_us),
            group_commit_records: self.group_commit_records,
            sync_interval: Duration::from_millis(sync),
            queue_max_bytes: self.queue_max_bytes,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AckSection {
    pub wait_ms: u64,
    pub backoff_ms: Vec<u64>,
    pub max_deliver: u32,
    pub max_pending: usize,
}

impl Default for AckSection {
    fn default() -> Self {
        AckSection {
            wait_ms: DEFAULT_ACK_WAIT_MS,
            backoff_ms: DEFAULT_ACK_BACKOFF_MS.to_vec(),
            max_deliver: DEFAULT_MAX_DELIVER,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxSection {
    pub ttl_s: u64,
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl Default for InboxSection {
    fn default() -> Self {
        InboxSection {
            ttl_s: DEFAULT_INBOX_TTL_S,
            max_messages: DEFAULT_INBOX_MAX_MESSAGES,
            max_bytes: DEFAULT_INBOX_MAX_BYTES,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupSection {
    pub window_s: u64,
    pub max_entries: usize,
}

impl Default for DedupSection {
    fn default() -> Self {
        DedupSection {
            window_s: DEFAULT_DEDUP_WINDOW_S,
            max_entries: DEFAULT_DEDUP_MAX_ENTRIES,
        }
    }
}

/// Longest `ack.wait_ms`, `ack.backoff_ms` step: one day.
const MAX_WAIT_MS: u64 = 86_400_000;

/// Validates `[ack]`, `[inbox]` and `[dedup]` into the broker's rules (server-wide totals; each
/// shard takes its share).
pub(super) fn delivery(
    ack: &AckSection,
    inbox: &InboxSection,
    dedup: &DedupSection,
    lz4_threshold: usize,
    max_durable_groups: usize,
) -> Result<DeliveryConfig, ConfigError> {
    let wait_ms = positive("ack.wait_ms", ack.wait_ms)?;
    if wait_ms > MAX_WAIT_MS {
        return Err(invalid(
            "ack.wait_ms",
            format!("{wait_ms} is more than one day"),
        ));
    }
    if ack.backoff_ms.len() > 64 || ack.backoff_ms.iter().any(|&b| b > MAX_WAIT_MS) {
        return Err(invalid(
            "ack.backoff_ms",
            "at most 64 steps of at most one day (86400000 ms) each".into(),
        ));
    }
    positive("ack.max_deliver", u64::from(ack.max_deliver))?;
    positive("ack.max_pending", ack.max_pending as u64)?;
    let ttl_s = positive("inbox.ttl_s", inbox.ttl_s)?;
    if ttl_s > 10 * 365 * 86_400 {
        return Err(invalid(
            "inbox.ttl_s",
            format!("{ttl_s} is more than ten years"),
        ));
    }
    positive("inbox.max_messages", inbox.max_messages as u64)?;
    positive("inbox.max_bytes", inbox.max_bytes as u64)?;
    let window_s = positive("dedup.window_s", dedup.window_s)?;
    if window_s > 86_400 {
        return Err(invalid(
            "dedup.window_s",
            format!("{window_s} is more than one day"),
        ));
    }
    Ok(DeliveryConfig {
        wait_ms,
        backoff_ms: ack.backoff_ms.clone().into(),
        max_deliver: ack.max_deliver,
        max_pending: ack.max_pending,
        inbox_ttl_ms: ttl_s * 1000,
        inbox_max_messages: inbox.max_messages,
        inbox_max_bytes: inbox.max_bytes,
        dedup_window_ms: window_s * 1000,
        dedup_max_entries: dedup.max_entries,
        lz4_threshold,
        max_durable_groups,
    })
}

/// Default `history.size`: messages kept per channel; 0 turns history off.
pub const DEFAULT_HISTORY_SIZE: usize = 0;
/// Default `history.ttl_s`.
pub const DEFAULT_HISTORY_TTL_S: u64 = 300;
/// Default `history.max_bytes`: message bytes all channels keep together.
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 256 << 20;
/// Largest `history.size` accepted (a recovery sends up to this many messages at once).
pub const MAX_HISTORY_SIZE: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySection {
    pub size: usize,
    pub ttl_s: u64,
    pub max_bytes: usize,
    pub durable: bool,
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection {
            size: DEFAULT_HISTORY_SIZE,
            ttl_s: DEFAULT_HISTORY_TTL_S,
            max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            durable: false,
        }
    }
}

impl HistorySection {
    /// The server-wide settings (each shard takes its share of `max_bytes`).
    pub(super) fn validate(&self) -> Result<HistoryConfig, ConfigError> {
        if self.size > MAX_HISTORY_SIZE {
            return Err(invalid(
                "history.size",
                format!("{} is more than {MAX_HISTORY_SIZE}", self.size),
            ));
        }
        let ttl_s = positive("history.ttl_s", self.ttl_s)?;
        if ttl_s > 86_400 * 30 {
            return Err(invalid(
                "history.ttl_s",
                format!("{ttl_s} is more than 30 days"),
            ));
        }
        positive("history.max_bytes", self.max_bytes as u64)?;
        if self.durable && self.size == 0 {
            return Err(invalid(
                "history.durable",
                "is true while history.size is 0 (history off)".into(),
            ));
        }
        Ok(HistoryConfig {
            size: self.size,
            ttl_ms: ttl_s * 1000,
            max_bytes: self.max_bytes,
            durable: self.durable,
        })
    }
}
