//! `[limits]`: per-connection rate limits, each a token bucket with a sustained rate and a burst
//! (applied by [`wsedge_core::limits`]).

use serde::Deserialize;

use wsedge_core::limits::{Rate, RateLimits};

use super::error::{invalid, positive, ConfigError};

/// Default `limits.messages_per_s`: data messages one connection may send per second, sustained.
pub const DEFAULT_MESSAGES_PER_S: u64 = 10_000;
/// Default `limits.messages_burst`: messages one connection may send at once.
pub const DEFAULT_MESSAGES_BURST: u64 = 20_000;
/// Default `limits.publish_bytes_per_s`: published `data` bytes per connection per second.
pub const DEFAULT_PUBLISH_BYTES_PER_S: u64 = 16 << 20;
/// Default `limits.publish_burst_bytes`: published bytes at once (at least `max_message_size`).
pub const DEFAULT_PUBLISH_BURST_BYTES: u64 = 32 << 20;
/// Default `limits.control_frames_per_s`: pings and pongs a client may send per second.
pub const DEFAULT_CONTROL_FRAMES_PER_S: u64 = 50;
/// Default `limits.control_frames_burst`.
pub const DEFAULT_CONTROL_FRAMES_BURST: u64 = 100;
/// Default `limits.violations_before_close`: requests refused `rate_limited` before close 1008.
pub const DEFAULT_VIOLATIONS_BEFORE_CLOSE: u32 = 10;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub messages_per_s: u64,
    pub messages_burst: u64,
    pub publish_bytes_per_s: u64,
    pub publish_burst_bytes: u64,
    pub control_frames_per_s: u64,
    pub control_frames_burst: u64,
    pub violations_before_close: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            messages_per_s: DEFAULT_MESSAGES_PER_S,
            messages_burst: DEFAULT_MESSAGES_BURST,
            publish_bytes_per_s: DEFAULT_PUBLISH_BYTES_PER_S,
            publish_burst_bytes: DEFAULT_PUBLISH_BURST_BYTES,
            control_frames_per_s: DEFAULT_CONTROL_FRAMES_PER_S,
            control_frames_burst: DEFAULT_CONTROL_FRAMES_BURST,
            violations_before_close: DEFAULT_VIOLATIONS_BEFORE_CLOSE,
        }
    }
}

impl LimitsSection {
    /// Checks every rate; `max_message_size` is the least a publish burst may be.
    pub(super) fn validate(&self, max_message_size: usize) -> Result<RateLimits, ConfigError> {
        let rate = |key_rate, per_s: u64, key_burst, burst: u64, at_least: u64| {
            positive(key_rate, per_s)?;
            if burst < at_least.max(1) {
                return Err(invalid(
                    key_burst,
                    format!("{burst} must be at least {}", at_least.max(1)),
                ));
            }
            Ok(Rate { per_s, burst })
        };
        Ok(RateLimits {
            messages: rate(
                "limits.messages_per_s",
                self.messages_per_s,
                "limits.messages_burst",
                self.messages_burst,
                1,
            )?,
            publish_bytes: rate(
                "limits.publish_bytes_per_s",
                self.publish_bytes_per_s,
                "limits.publish_burst_bytes",
                self.publish_burst_bytes,
                max_message_size as u64,
            )?,
            control_frames: rate(
                "limits.control_frames_per_s",
                self.control_frames_per_s,
                "limits.control_frames_burst",
                self.control_frames_burst,
                1,
            )?,
            violations_before_close: positive(
                "limits.violations_before_close",
                self.violations_before_close.into(),
            )? as u32,
        })
    }
}
