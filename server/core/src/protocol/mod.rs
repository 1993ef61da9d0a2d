//! The sans-IO protocol core: bytes in, values out. Nothing here touches a socket or a clock, so
//! all of it is unit-tested, fuzzed and benchmarked directly.

pub mod compress;
pub mod decoder;
pub mod envelope;
mod error_code;
mod fields;
pub mod frame;
pub mod json_check;
pub mod reply;
pub mod time;

/// Delivery priority: the four outbox lanes, drained highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Critical = 0,
    High = 1,
    Normal = 2,
    Low = 3,
}

impl Priority {
    /// All lanes, highest first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// How a queue group picks the member that gets a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// The member with the fewest bytes queued (and on their way) to it; ties round-robin.
    #[default]
    LeastLoaded,
    /// Each member in turn.
    RoundRobin,
}

impl Balance {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::LeastLoaded => "least_loaded",
            Balance::RoundRobin => "round_robin",
        }
    }

    /// Parses a wire (or config) name.
    pub fn parse(name: &str) -> Option<Balance> {
        [Balance::LeastLoaded, Balance::RoundRobin]
            .into_iter()
            .find(|b| b.as_str() == name)
    }
}

/// Longest queue group name in bytes.
pub const MAX_GROUP_LEN: usize = 64;

/// Whether `name` is a queue group name: 1–64 bytes of `[A-Za-z0-9_:-]`.
pub fn is_valid_group(name: &str) -> bool {
    (1..=MAX_GROUP_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'))
}

/// Longest channel name in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;
