//! The label values metrics are counted under: fixed sets, so a hostile client cannot grow the
//! number of series.

/// The requests counted by op (`wsedge_messages_received_total{op}`); `invalid` is a message
/// that is not a valid envelope.
pub const OPS: [&str; 16] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "send",
    "ack",
    "nak",
    "term",
    "cancel",
    "presence",
    "history",
    "ping",
    "echo",
    "refresh",
    "invalid",
    "binary",
    "raw_echo",
];

/// Index of an op in [`OPS`].
pub fn op_index(name: &str) -> usize {
    OPS.iter().position(|o| *o == name).unwrap_or(13)
}

/// HTTP statuses a refused upgrade is counted under (`wsedge_upgrade_rejections_total`);
/// anything else counts as `other`.
pub const REJECTION_STATUSES: [&str; 9] = [
    "400", "401", "403", "404", "405", "426", "429", "503", "other",
];

/// Index of `status` in [`REJECTION_STATUSES`].
pub fn rejection_index(status: u16) -> usize {
    let text = status.to_string();
    REJECTION_STATUSES
        .iter()
        .position(|s| *s == text)
        .unwrap_or(REJECTION_STATUSES.len() - 1)
}

/// Why a connection closed (`wsedge_closes_total{code,reason}`), with the code it closed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed (its code is not kept: it is the client's to choose).
    Peer,
    Shutdown,
    IdleTimeout,
    TokenExpired,
    SlowConsumer,
    RateLimited,
    /// Closed through `POST /api/disconnect`.
    Disconnected,
    /// Failed by the decoder, or too many pings (the code says which).
    Protocol,
    /// The TCP connection ended without a close handshake.
    Abnormal,
}

impl CloseReason {
    pub const ALL: [CloseReason; 9] = [
        CloseReason::Peer,
        CloseReason::Shutdown,
        CloseReason::IdleTimeout,
        CloseReason::TokenExpired,
        CloseReason::SlowConsumer,
        CloseReason::RateLimited,
        CloseReason::Disconnected,
        CloseReason::Protocol,
        CloseReason::Abnormal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Protocol => "protocol",
            CloseReason::Abnormal => "abnormal",
        }
    }
}

/// Close codes counted by their number (1005: an empty close frame, 1006: none); any other
/// counts as `other`.
pub const CLOSE_CODES: [u16; 10] = [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 4001];

/// Index of `code` in [`CLOSE_CODES`], or its length for `other`.
pub fn close_code_index(code: u16) -> usize {
    CLOSE_CODES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(CLOSE_CODES.len())
}

/// Why a message was dropped (`wsedge_dropped_total{lane,reason}`).
pub const DROP_REASONS: [&str; 2] = [
    // A connection's outbox was over its share for the lane (low lane only).
    "outbox_full",
    // Another shard's inbound queue had no room (a history broadcast).
    "shard_queue_full",
];

/// Limits whose refusals are counted (`wsedge_rate_limited_total{limit}`).
pub const LIMITS: [&str; 4] = [
    "messages_per_s",
    "publish_bytes_per_s",
    "refresh",
    "new_connections_per_ip",
];

/// Index of a limit in [`LIMITS`].
pub fn limit_index(limit: &str) -> usize {
    LIMITS.iter().position(|l| *l == limit).unwrap_or(0)
}
