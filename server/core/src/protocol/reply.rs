//! Server-to-client JSON messages of protocol v1, each written straight into a frame buffer and
//! returned as one encoded text frame.

use bytes::Bytes;
use simd_json::prelude::*;

use super::envelope::{ErrorCode, Json};
use super::frame::{self, OpCode};
use super::Priority;

/// JSON text under construction behind frame headroom.
struct Writer(Vec<u8>);

impl Writer {
    fn new(capacity: usize) -> Self {
        Writer(frame::payload_buffer(capacity))
    }

    fn raw(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    fn string(&mut self, s: &str) -> &mut Self {
        write_json_string(&mut self.0, s);
        self
    }

    /// `s` as a JSON string, or `null`.
    fn string_or_null(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.raw("null"),
        }
    }

    fn value(&mut self, v: &Json<'_>) -> &mut Self {
        v.write(&mut self.0).expect("writing to a Vec cannot fail");
        self
    }

    /// `,"ref":<value>` when there is one.
    fn reference(&mut self, r: Option<&Json<'_>>) -> &mut Self {
        if let Some(r) = r {
            self.raw(",\"ref\":").value(r);
        }
        self
    }

    fn finish(&mut self) -> Bytes {
        frame::finish(std::mem::take(&mut self.0), OpCode::Text)
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

/// `{"op":"welcome","connection":"<id>","shard":<n>,"protocol":1,"user":"<sub>"|null}`
pub fn welcome(connection: &str, shard: usize, user: Option<&str>) -> Bytes {
    Writer::new(96 + user.map_or(0, str::len))
        .raw(r#"{"op":"welcome","connection":"#)
        .string(connection)
        .raw(&format!(r#","shard":{shard},"protocol":1,"user":"#))
        .string_or_null(user)
        .raw("}")
        .finish()
}

/// `{"op":"ok","ref":<ref>}`
pub fn ok(reference: &Json<'_>) -> Bytes {
    Writer::new(32)
        .raw(r#"{"op":"ok""#)
        .reference(Some(reference))
        .raw("}")
        .finish()
}

/// `{"op":"join"|"leave","channel":"<c>","user":"<u>"|null,"connection":"<id>"}`
pub fn presence_event(kind: &str, channel: &str, user: Option<&str>, connection: &str) -> Bytes {
    let mut w = Writer::new(64 + channel.len() + user.map_or(4, str::len) + connection.len());
    w.raw(r#"{"op":""#)
        .raw(kind)
        .raw(r#"","channel":""#)
        .raw(channel) // channel names are validated to need no escaping
        .raw(r#"","user":"#);
    match user {
        Some(user) => w.string(user),
        None => w.raw("null"),
    };
    w.raw(r#","connection":"#)
        .string(connection)
        .raw("}")
        .finish()
}

/// `{"op":"presence","ref":<ref>,"channel":"<c>","connections":N,"users":[...]}` (the ref, if
/// any, already encoded as JSON text), with `"truncated":true` when users were left out.
pub fn presence(
    reference: Option<&str>,
    channel: &str,
    connections: usize,
    users: &[impl AsRef<str>],
    truncated: bool,
) -> Bytes {
    let size: usize = users.iter().map(|u| u.as_ref().len() + 3).sum();
    let mut w = Writer::new(96 + channel.len() + size);
    w.raw(r#"{"op":"presence""#);
    if let Some(reference) = reference {
        w.raw(r#","ref":"#).raw(reference);
    }
    w.raw(r#","channel":""#)
        .raw(channel)
        .raw(&format!(r#"","connections":{connections},"users":["#));
    for (i, user) in users.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.string(user.as_ref());
    }
    w.raw("]");
    if truncated {
        w.raw(r#","truncated":true"#);
    }
    w.raw("}").finish()
}

/// `{"op":"ok","ref":<ref>}`, the ref already encoded as JSON text.
pub fn ok_raw(reference: &str) -> Bytes {
    Writer::new(32 + reference.len())
        .raw(r#"{"op":"ok","ref":"#)
        .raw(reference)
        .raw("}")
        .finish()
}

/// `{"op":"error","ref":<ref if any>,"code":"<code>","message":"<text>"}`
pub fn error(reference: Option<&Json<'_>>, code: ErrorCode, message: &str) -> Bytes {
    Writer::new(64 + message.len())
        .raw(r#"{"op":"error""#)
        .reference(reference)
        .raw(r#","code":""#)
        .raw(code.as_str())
        .raw(r#"","message":"#)
        .string(message)
        .raw("}")
        .finish()
}

/// As [`error`], with the ref (if any) already encoded as JSON text.
pub fn error_raw(reference: Option<&str>, code: ErrorCode, message: &str) -> Bytes {
    let mut w = Writer::new(64 + message.len() + reference.map_or(0, str::len));
    w.raw(r#"{"op":"error""#);
    if let Some(reference) = reference {
        w.raw(r#","ref":"#).raw(reference);
    }
    w.raw(r#","code":""#)
        .raw(code.as_str())
        .raw(r#"","message":"#)
        .string(message)
        .raw("}")
        .finish()
}

/// `{"op":"pong","ref":<ref if any>}`
pub fn pong(reference: Option<&Json<'_>>) -> Bytes {
    Writer::new(32)
        .raw(r#"{"op":"pong""#)
        .reference(reference)
        .raw("}")
        .finish()
}

/// `{"op":"echo","data":<data>,"ref":<ref if any>}`
pub fn echo(data: &Json<'_>, reference: Option<&Json<'_>>, size_hint: usize) -> Bytes {
    Writer::new(size_hint + 32)
        .raw(r#"{"op":"echo","data":"#)
        .value(data)
        .reference(reference)
        .raw("}")
        .finish()
}

/// `{"op":"message","channel":"<c>","id":"<id>","priority":"<p>","data":<data>}`
pub fn message(
    channel: &str,
    id: &str,
    priority: Priority,
    data: &Json<'_>,
    size_hint: usize,
) -> Bytes {
    Writer::new(size_hint + channel.len() + id.len() + 64)
        .raw(r#"{"op":"message","channel":""#)
        .raw(channel) // channel names are validated to need no escaping
        .raw(r#"","id":"#)
        .string(id)
        .raw(r#","priority":""#)
        .raw(priority.as_str())
        .raw(r#"","data":"#)
        .value(data)
        .raw("}")
        .finish()
}

/// `{"op":"message","channel":"<c>","id":"<id>","priority":"<p>","data":<data>}` with `data`
/// as JSON text (a scheduled publish, published when due).
pub fn message_raw(channel: &str, id: &str, priority: Priority, data: &[u8]) -> Bytes {
    message_text(channel, id, priority, None, data)
}

/// The id of a message frame's JSON made by [`message`] or [`message_at`] (its channel needs no
/// escaping; server-made ids need none either).
pub fn message_id(payload: &[u8]) -> Option<&str> {
    let rest = payload.strip_prefix(br#"{"op":"message","channel":""#)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let rest = rest[end..].strip_prefix(br#"","id":""#)?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// `{"op":"message","channel":"<c>","id":"<id>","priority":"<p>","offset":N,"epoch":"<e>",`
/// `"data":<data>}`: a message of a channel with history; `data` is JSON text.
pub fn message_at(
    channel: &str,
    id: &str,
    priority: Priority,
    offset: u64,
    epoch: &str,
    data: &[u8],
) -> Bytes {
    message_text(channel, id, priority, Some((offset, epoch)), data)
}

/// A message frame with `data` as JSON text, and its position when the channel has history.
fn message_text(
    channel: &str,
    id: &str,
    priority: Priority,
    position: Option<(u64, &str)>,
    data: &[u8],
) -> Bytes {
    let epoch_len = position.map_or(0, |(_, e)| e.len());
    let mut w = Writer::new(data.len() + channel.len() + id.len() + epoch_len + 96);
    w.raw(r#"{"op":"message","channel":""#)
        .raw(channel) // channel names are validated to need no escaping
        .raw(r#"","id":"#)
        .string(id)
        .raw(r#","priority":""#)
        .raw(priority.as_str());
    if let Some((offset, epoch)) = position {
        w.raw(&format!(r#"","offset":{offset},"epoch":"#))
            .string(epoch);
        w.raw(r#","data":"#);
    } else {
        w.raw(r#"","data":"#);
    }
    w.0.extend_from_slice(data);
    w.raw("}").finish()
}

/// `{"op":"ok","ref":<ref>,"epoch":"<e>","offset":N}` (with `"recovered":true|false` when the
/// subscribe asked to recover).
pub fn ok_position(reference: &str, epoch: &str, offset: u64, recovered: Option<bool>) -> Bytes {
    let mut w = Writer::new(80 + reference.len() + epoch.len());
    w.raw(r#"{"op":"ok","ref":"#)
        .raw(reference)
        .raw(r#","epoch":"#)
        .string(epoch)
        .raw(&format!(r#","offset":{offset}"#));
    if let Some(recovered) = recovered {
        w.raw(&format!(r#","recovered":{recovered}"#));
    }
    w.raw("}").finish()
}

/// `{"op":"history","ref":<ref>,"channel":"<c>","epoch":"<e>","offset":N,"recovered":B,`
/// `"messages":[...]}`: `messages` are the JSON texts (`payloads`) of the messages, oldest
/// first; `recovered` only when the request gave `since`.
pub fn history(
    reference: Option<&str>,
    channel: &str,
    epoch: &str,
    offset: u64,
    recovered: Option<bool>,
    payloads: &[&[u8]],
) -> Bytes {
    let size: usize = payloads.iter().map(|p| p.len() + 1).sum();
    let mut w = Writer::new(128 + channel.len() + epoch.len() + size);
    w.raw(r#"{"op":"history""#);
    if let Some(reference) = reference {
        w.raw(r#","ref":"#).raw(reference);
    }
    w.raw(r#","channel":""#)
        .raw(channel)
        .raw(r#"","epoch":"#)
        .string(epoch)
        .raw(&format!(r#","offset":{offset}"#));
    if let Some(recovered) = recovered {
        w.raw(&format!(r#","recovered":{recovered}"#));
    }
    w.raw(r#","messages":["#);
    for (i, payload) in payloads.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.0.extend_from_slice(payload);
    }
    w.raw("]}").finish()
}

/// `{"op":"message","user":"<to>","from":"<sender>"|null,"id":"<id>","priority":"<p>",`
/// (with `ack`: `"ack":true,`) `"data":<data>}`
pub fn direct(
    to: &str,
    from: Option<&str>,
    id: &str,
    priority: Priority,
    ack: bool,
    data: &Json<'_>,
    size_hint: usize,
) -> Bytes {
    Writer::new(size_hint + to.len() + from.map_or(4, str::len) + id.len() + 92)
        .raw(r#"{"op":"message","user":"#)
        .string(to)
        .raw(r#","from":"#)
        .string_or_null(from)
        .raw(r#","id":"#)
        .string(id)
        .raw(r#","priority":""#)
        .raw(priority.as_str())
        .raw(if ack {
            r#"","ack":true,"data":"#
        } else {
            r#"","data":"#
        })
        .value(data)
        .raw("}")
        .finish()
}

/// `{"op":"ok","ref":<ref>,"scheduled":"<id>"}`: a scheduled message is stored.
pub fn ok_scheduled(reference: &str, id: &str) -> Bytes {
    Writer::new(48 + reference.len() + id.len())
        .raw(r#"{"op":"ok","ref":"#)
        .raw(reference)
        .raw(r#","scheduled":"#)
        .string(id)
        .raw("}")
        .finish()
}

/// `{"op":"ok","ref":<ref>,"duplicate":true}`: a repeated `msg_id`, carried out nowhere.
pub fn ok_duplicate(reference: &str) -> Bytes {
    Writer::new(48 + reference.len())
        .raw(r#"{"op":"ok","ref":"#)
        .raw(reference)
        .raw(r#","duplicate":true}"#)
        .finish()
}

/// `{"op":"ok","ref":<ref>,"delivered":<n>}`, the ref already encoded as JSON text.
pub fn ok_delivered(reference: &str, delivered: usize) -> Bytes {
    Writer::new(48 + reference.len())
        .raw(r#"{"op":"ok","ref":"#)
        .raw(reference)
        .raw(&format!(r#","delivered":{delivered}}}"#))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::payload_of;

    fn text(frame: &Bytes) -> &str {
        assert_eq!(frame[0], 0x81);
        std::str::from_utf8(payload_of(frame)).unwrap()
    }

    #[test]
    fn messages_are_exact_json() {
        let mut buf = br#"{"x":[1,"two",null],"r":"id-1"}"#.to_vec();
        let v = simd_json::to_borrowed_value(&mut buf).unwrap();
        let (data, r) = (v.get("x").unwrap(), v.get("r").unwrap());
        assert_eq!(
            text(&welcome("0-1", 1, None)),
            r#"{"op":"welcome","connection":"0-1","shard":1,"protocol":1,"user":null}"#
        );
        assert_eq!(
            text(&welcome("0-1", 1, Some("a\"b"))),
            r#"{"op":"welcome","connection":"0-1","shard":1,"protocol":1,"user":"a\"b"}"#
        );
        assert_eq!(text(&ok(r)), r#"{"op":"ok","ref":"id-1"}"#);
        assert_eq!(text(&pong(None)), r#"{"op":"pong"}"#);
        assert_eq!(
            text(&echo(data, Some(r), 0)),
            r#"{"op":"echo","data":[1,"two",null],"ref":"id-1"}"#
        );
        assert_eq!(
            text(&message("c", "a-1", Priority::High, data, 0)),
            r#"{"op":"message","channel":"c","id":"a-1","priority":"high","data":[1,"two",null]}"#
        );
        assert_eq!(
            text(&direct("bob", None, "a-2", Priority::Low, false, data, 0)),
            r#"{"op":"message","user":"bob","from":null,"id":"a-2","priority":"low","data":[1,"two",null]}"#
        );
        assert_eq!(
            text(&direct(
                "bob",
                Some("al\"ice"),
                "a-3",
                Priority::Normal,
                true,
                data,
                0
            )),
            r#"{"op":"message","user":"bob","from":"al\"ice","id":"a-3","priority":"normal","ack":true,"data":[1,"two",null]}"#
        );
        assert_eq!(
            text(&ok_delivered(r#""r1""#, 3)),
            r#"{"op":"ok","ref":"r1","delivered":3}"#
        );
        assert_eq!(
            text(&presence_event("join", "room", Some("u1"), "0-3")),
            r#"{"op":"join","channel":"room","user":"u1","connection":"0-3"}"#
        );
        assert_eq!(
            text(&presence(Some("7"), "room", 3, &["a", "b"], true)),
            r#"{"op":"presence","ref":7,"channel":"room","connections":3,"users":["a","b"],"truncated":true}"#
        );
        assert_eq!(
            text(&presence(None, "room", 1, &[] as &[&str], false)),
            r#"{"op":"presence","channel":"room","connections":1,"users":[]}"#
        );
        let e = error(None, ErrorCode::UnknownOp, "bad \"op\"\n\u{1}");
        assert_eq!(
            text(&e),
            r#"{"op":"error","code":"unknown_op","message":"bad \"op\"\n\u0001"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(text(&e)).unwrap();
        assert_eq!(parsed["message"], "bad \"op\"\n\u{1}");
    }
}
