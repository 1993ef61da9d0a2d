//! The broker's settings: where it is, its limits, and the rules of acknowledged delivery.

/// Limits the broker enforces, and where it is.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This shard's index, and how many shards there are.
    pub shard: usize,
    pub shards: usize,
    /// Users a presence answer lists at most (`presence.max_users`).
    pub presence_max_users: usize,
    /// Subscriptions one connection may hold (`connection.max_subscriptions`).
    pub max_subscriptions: usize,
    /// A channel batch this large goes out at once (`connection.write_batch_bytes`).
    pub max_batch_bytes: usize,
    /// Acknowledged delivery, inboxes and dedup.
    pub delivery: DeliveryConfig,
    /// Channel history (this shard's share of `max_bytes`).
    pub history: HistoryConfig,
    /// Start of the server in Unix µs: history epochs are unique across restarts.
    pub boot: u64,
}

/// The rules of acknowledged delivery, inboxes and dedup (`[ack]`, `[inbox]`, `[dedup]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Time to acknowledge a delivery (`ack.wait_ms`).
    pub wait_ms: u64,
    /// Waits before the 1st, 2nd, ... redelivery; the last repeats (`ack.backoff_ms`).
    pub backoff_ms: Box<[u64]>,
    /// Deliveries before a message is dead-lettered (`ack.max_deliver`).
    pub max_deliver: u32,
    /// Unacknowledged deliveries one user has at a time (`ack.max_pending`).
    pub max_pending: usize,
    /// Time a message waits in an inbox (`inbox.ttl_s`, in ms).
    pub inbox_ttl_ms: u64,
    /// Messages one inbox holds (`inbox.max_messages`).
    pub inbox_max_messages: usize,
    /// Bytes all the inboxes homed on this shard hold (its share of `inbox.max_bytes`).
    pub inbox_max_bytes: usize,
    /// How long a `msg_id` is remembered (`dedup.window_s`, in ms).
    pub dedup_window_ms: u64,
    /// `msg_id`s this shard remembers at most (its share of `dedup.max_entries`).
    pub dedup_max_entries: usize,
    /// `protocol.lz4_threshold`, for the frames built here.
    pub lz4_threshold: usize,
    /// Durable groups homed on this shard at most (its share of `groups.max_durable`).
    pub max_durable_groups: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            wait_ms: 30_000,
            backoff_ms: vec![1_000, 5_000, 30_000].into(),
            max_deliver: 5,
            max_pending: 1_000,
            inbox_ttl_ms: 604_800_000,
            inbox_max_messages: 10_000,
            inbox_max_bytes: 1 << 30,
            dedup_window_ms: 120_000,
            dedup_max_entries: 1_000_000,
            lz4_threshold: 1024,
            max_durable_groups: 1000,
        }
    }
}

/// Channel history (`[history]`): messages kept per channel (0: off), for how long, the bytes
/// this shard keeps at most, and whether they are in the store too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryConfig {
    pub size: usize,
    pub ttl_ms: u64,
    pub max_bytes: usize,
    /// Messages are written to the store before they are published (`history.durable`).
    pub durable: bool,
}
