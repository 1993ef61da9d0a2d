//! The sans-IO protocol core: bytes in, values out. Nothing here touches a socket or a clock, so
//! all of it is unit-tested, fuzzed and benchmarked directly.

pub mod compress;
pub mod decoder;
pub mod envelope;
pub mod frame;
pub mod json_check;
pub mod reply;

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

/// Longest channel name in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;
