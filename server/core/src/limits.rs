//! Per-connection rate limits (`[limits]`): token buckets with a burst, pure (the time is always an
//! argument), so every rule is unit-tested without a clock or a socket.

use std::time::{Duration, Instant};

const NANOS_PER_S: u128 = 1_000_000_000;

/// Per-connection rate limits (`[limits]`): token buckets, each a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub messages: Rate,
    pub publish_bytes: Rate,
    pub control_frames: Rate,
    pub violations_before_close: u32,
}

/// A token bucket's refill rate per second and capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_s: u64,
    pub burst: u64,
}

/// A token bucket: holds at most `burst` tokens, refilled at `per_s` tokens per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    tokens: u64,
    /// The time up to which refills have been counted.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes `n` tokens if there are that many at `now`.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= self.rate.burst {
            self.last = now;
            return;
        }
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let per_s = u128::from(self.rate.per_s);
        let added = elapsed * per_s / NANOS_PER_S;
        if added == 0 {
            return;
        }
        let room = u128::from(self.rate.burst - self.tokens);
        if added >= room {
            self.tokens = self.rate.burst;
            self.last = now;
        } else {
            self.tokens += added as u64;
            // Only the time the added tokens stand for is used up; the rest carries over, so
            // frequent calls at a low rate still refill.
            self.last += Duration::from_nanos((added * NANOS_PER_S / per_s) as u64);
        }
    }
}

/// What to do with a request checked against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limits: carry it out.
    Allow,
    /// Over a limit: refuse it with `rate_limited`.
    Refuse,
    /// Over a limit once too often: close the connection with 1008.
    Close,
}

/// One connection's buckets and its count of refused requests.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    messages: TokenBucket,
    publish_bytes: TokenBucket,
    control_frames: TokenBucket,
    violations: u32,
    violations_before_close: u32,
}

impl ConnLimits {
    pub fn new(limits: &RateLimits, now: Instant) -> Self {
        ConnLimits {
            messages: TokenBucket::new(limits.messages, now),
            publish_bytes: TokenBucket::new(limits.publish_bytes, now),
            control_frames: TokenBucket::new(limits.control_frames, now),
            violations: 0,
            violations_before_close: limits.violations_before_close,
        }
    }

    /// A data message arrived.
    pub fn message(&mut self, now: Instant) -> Verdict {
        let allowed = self.messages.try_take(1, now);
        self.verdict(allowed)
    }

    /// A publish of `bytes` (its message frame) is about to be carried out.
    pub fn publish(&mut self, bytes: usize, now: Instant) -> Verdict {
        let allowed = self.publish_bytes.try_take(bytes as u64, now);
        self.verdict(allowed)
    }

    /// A ping or pong arrived; false when it is over the limit (the connection is closed).
    pub fn control_frame(&mut self, now: Instant) -> bool {
        self.control_frames.try_take(1, now)
    }

    fn verdict(&mut self, allowed: bool) -> Verdict {
        if allowed {
            return Verdict::Allow;
        }
        self.violations += 1;
        if self.violations >= self.violations_before_close {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rate(per_s: u64, burst: u64) -> Rate {
        Rate { per_s, burst }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(100, 5), t0);
        assert!((0..5).all(|_| b.try_take(1, t0)));
        assert!(!b.try_take(1, t0));
        // 100/s: one token per 10 ms.
        assert!(!b.try_take(1, t0 + 9 * MS));
        assert!(b.try_take(1, t0 + 10 * MS));
        assert!(!b.try_take(1, t0 + 10 * MS));
        // Never more than the burst, however long it rests.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..5).all(|_| b.try_take(1, later)));
        assert!(!b.try_take(1, later));
    }

    #[test]
    fn frequent_calls_at_a_low_rate_still_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(10, 1), t0);
        assert!(b.try_take(1, t0));
        // Asked every millisecond, it must still refill after 100 ms, not be starved by rounding.
        let refilled = (1..=100u32).find(|&ms| b.try_take(1, t0 + ms * MS));
        assert_eq!(refilled, Some(100));
    }

    #[test]
    fn a_take_larger_than_what_is_left_is_refused_whole() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate(1000, 1000), t0);
        assert!(b.try_take(600, t0));
        assert!(!b.try_take(600, t0));
        assert!(b.try_take(400, t0));
    }

    #[test]
    fn refusals_close_after_violations_before_close() {
        let t0 = Instant::now();
        let limits = RateLimits {
            messages: rate(1, 2),
            publish_bytes: rate(100, 100),
            control_frames: rate(1, 1),
            violations_before_close: 3,
        };
        let mut c = ConnLimits::new(&limits, t0);
        assert_eq!(c.message(t0), Verdict::Allow);
        assert_eq!(c.message(t0), Verdict::Allow);
        assert_eq!(c.message(t0), Verdict::Refuse);
        assert_eq!(c.publish(101, t0), Verdict::Refuse, "bytes count too");
        assert_eq!(c.publish(100, t0), Verdict::Allow);
        assert_eq!(c.message(t0), Verdict::Close);
        assert!(c.control_frame(t0));
        assert!(!c.control_frame(t0));
    }
}
