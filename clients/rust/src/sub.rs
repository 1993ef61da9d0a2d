//! A subscription as the connection task keeps it (what to resubscribe, where it got to), and
//! when its token needs refreshing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::message::Message;
use crate::options::SubscribeOptions;

/// A subscription: resubscribed after every reconnect, from `position`.
pub(crate) struct Sub {
    pub(crate) channel: String,
    pub(crate) options: SubscribeOptions,
    pub(crate) messages: mpsc::UnboundedSender<Message>,
    /// The last (epoch, offset) seen, for `since` after a reconnect.
    pub(crate) position: Option<(String, u64)>,
    pub(crate) first: Option<oneshot::Sender<Result<(), Error>>>,
}

impl Sub {
    pub(crate) fn key(&self) -> String {
        key(&self.channel, self.options.group.as_deref())
    }

    /// Whether a message at `position` is new here (a replay overlapping what was seen is not).
    pub(crate) fn fresh(&mut self, epoch: Option<&str>, offset: Option<u64>) -> bool {
        let (Some(epoch), Some(offset)) = (epoch, offset) else {
            return true;
        };
        if self.options.ack || self.options.group.is_some() {
            return true;
        }
        if let Some((e, o)) = &self.position {
            if e == epoch && offset <= *o {
                return false;
            }
        }
        self.position = Some((epoch.to_string(), offset));
        true
    }
}

pub(crate) fn key(channel: &str, group: Option<&str>) -> String {
    format!("{channel}\0{}", group.unwrap_or(""))
}

/// When to fetch a fresh token: `before` ahead of `token`'s `exp` (at least a second from now);
/// `None` when it has no readable `exp`.
pub(crate) fn refresh_deadline(token: &str, before: Duration) -> Option<Instant> {
    let exp = token_expiry(token)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let left = Duration::from_secs(exp.saturating_sub(now));
    Some(Instant::now() + left.saturating_sub(before).max(Duration::from_secs(1)))
}

/// The `exp` (Unix seconds) of a JWT, without checking it.
pub(crate) fn token_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let mut bits = 0u32;
    let mut n = 0;
    let mut bytes = Vec::new();
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            bytes.push((bits >> n) as u8);
        }
    }
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_expiry_is_read_from_its_payload() {
        // {"sub":"a","exp":1700000000}
        let token = "x.eyJzdWIiOiJhIiwiZXhwIjoxNzAwMDAwMDAwfQ.y";
        assert_eq!(token_expiry(token), Some(1_700_000_000));
        assert_eq!(token_expiry("not a token"), None);
    }
}
