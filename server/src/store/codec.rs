//! How records are laid out in the store: keys that sort the way they are read back, and small
//! versioned binary values. A value that does not decode is corruption, reported with its key.

use std::sync::Arc;

use bytes::Bytes;
use wsedge_core::broker::{DeadLetter, DeadReason, StoredMessage};
use wsedge_core::protocol::Priority;

/// The first byte of every value: the layout's version (1: before scheduled messages).
const VERSION: u8 = 2;

/// A value that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Corrupt(pub &'static str);

/// `user`'s inbox message `seq`: the user's length (u16), the user, then `seq` (big-endian), so
/// one user's messages are adjacent and in order.
pub fn inbox_key(user: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + user.len() + 8);
    key.extend_from_slice(&(user.len() as u16).to_be_bytes());
    key.extend_from_slice(user.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn decode_inbox_key(key: &[u8]) -> Result<(Arc<str>, u64), Corrupt> {
    let mut r = Reader(key);
    let len = r.u16()? as usize;
    let user = std::str::from_utf8(r.take(len)?).map_err(|_| Corrupt("user is not UTF-8"))?;
    let seq = r.u64()?;
    Ok((user.into(), seq))
}

pub fn encode_message(m: &StoredMessage, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.push(priority_byte(m.priority));
    out.extend_from_slice(&m.created_ms.to_be_bytes());
    out.extend_from_slice(&m.expires_ms.to_be_bytes());
    out.extend_from_slice(&m.not_before_ms.to_be_bytes());
    match &m.from {
        Some(from) => {
            out.push(1);
            put_str(out, from);
        }
        None => out.push(0),
    }
    put_str(out, &m.id);
    out.extend_from_slice(&(m.payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&m.payload);
}

/// `m` as a value on its own.
pub fn message_value(m: &StoredMessage) -> Vec<u8> {
    let mut value = Vec::with_capacity(64 + m.payload.len());
    encode_message(m, &mut value);
    value
}

pub fn decode_message(value: &[u8]) -> Result<StoredMessage, Corrupt> {
    let mut r = Reader(value);
    decode_message_from(&mut r)
}

fn decode_message_from(r: &mut Reader<'_>) -> Result<StoredMessage, Corrupt> {
    let version = r.u8()?;
    if !(1..=VERSION).contains(&version) {
        return Err(Corrupt("unknown layout version"));
    }
    let priority = *Priority::ALL
        .get(r.u8()? as usize)
        .ok_or(Corrupt("bad priority"))?;
    let created_ms = r.u64()?;
    let expires_ms = r.u64()?;
    let (not_before_ms, from) = match version {
        1 => (0, None),
        _ => {
            let at = r.u64()?;
            let from = match r.u8()? {
                0 => None,
                _ => Some(r.str()?.into()),
            };
            (at, from)
        }
    };
    let id = r.str()?;
    let len = r.u32()? as usize;
    let payload = Bytes::copy_from_slice(r.take(len)?);
    Ok(StoredMessage {
        id: id.into(),
        payload,
        priority,
        created_ms,
        expires_ms,
        not_before_ms,
        from,
    })
}

/// A durable history message: its epoch, then the message as an inbox keeps it.
pub fn encode_history(epoch: &str, m: &StoredMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + epoch.len() + m.payload.len());
    put_str(&mut out, epoch);
    encode_message(m, &mut out);
    out
}

pub fn decode_history(value: &[u8]) -> Result<(Arc<str>, StoredMessage), Corrupt> {
    let mut r = Reader(value);
    let epoch = r.str()?.into();
    Ok((epoch, decode_message_from(&mut r)?))
}

pub fn encode_dead_letter(d: &DeadLetter) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + d.message.payload.len());
    out.push(VERSION);
    out.push(match d.reason {
        DeadReason::MaxDeliver => 0,
        DeadReason::Terminated => 1,
        DeadReason::Expired => 2,
    });
    out.extend_from_slice(&d.attempts.to_be_bytes());
    out.extend_from_slice(&d.dead_ms.to_be_bytes());
    put_str(&mut out, &d.destination);
    match &d.detail {
        Some(detail) => {
            out.push(1);
            put_str(&mut out, detail);
        }
        None => out.push(0),
    }
    encode_message(&d.message, &mut out);
    out
}

pub fn decode_dead_letter(value: &[u8]) -> Result<DeadLetter, Corrupt> {
    let mut r = Reader(value);
    if !(1..=VERSION).contains(&r.u8()?) {
        return Err(Corrupt("unknown layout version"));
    }
    let reason = match r.u8()? {
        0 => DeadReason::MaxDeliver,
        1 => DeadReason::Terminated,
        2 => DeadReason::Expired,
        _ => return Err(Corrupt("bad dead-letter reason")),
    };
    let attempts = r.u32()?;
    let dead_ms = r.u64()?;
    let destination = r.str()?.into();
    let detail = match r.u8()? {
        0 => None,
        _ => Some(r.str()?.into()),
    };
    let message = decode_message_from(&mut r)?;
    Ok(DeadLetter {
        message,
        destination,
        reason,
        detail,
        attempts,
        dead_ms,
    })
}

fn priority_byte(p: Priority) -> u8 {
    Priority::ALL.iter().position(|&q| q == p).unwrap_or(1) as u8
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt("truncated value"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Corrupt> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn str(&mut self) -> Result<&'a str, Corrupt> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| Corrupt("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> StoredMessage {
        StoredMessage {
            id: "ab-0-1".into(),
            payload: Bytes::from_static(br#"{"op":"message","data":1}"#),
            priority: Priority::High,
            created_ms: 5,
            expires_ms: 6,
            not_before_ms: 7,
            from: Some("ann".into()),
        }
    }

    #[test]
    fn records_read_back_as_written_and_damage_is_an_error() {
        let key = inbox_key("bob", 7);
        assert_eq!(decode_inbox_key(&key).unwrap(), ("bob".into(), 7));
        assert!(inbox_key("bob", 7) < inbox_key("bob", 8));
        let mut value = Vec::new();
        encode_message(&message(), &mut value);
        assert_eq!(decode_message(&value).unwrap(), message());
        assert!(decode_message(&value[..value.len() - 1]).is_err());
        let dead = DeadLetter {
            message: message(),
            destination: "user:bob".into(),
            reason: DeadReason::Terminated,
            detail: Some("no".into()),
            attempts: 2,
            dead_ms: 9,
        };
        assert_eq!(
            decode_dead_letter(&encode_dead_letter(&dead)).unwrap(),
            dead
        );
        let mut wrong = encode_dead_letter(&dead);
        wrong[0] = 9;
        assert!(decode_dead_letter(&wrong).is_err());
        let history = encode_history("e-1", &message());
        assert_eq!(decode_history(&history).unwrap(), ("e-1".into(), message()));
        assert!(decode_history(&history[..3]).is_err());
    }
}
