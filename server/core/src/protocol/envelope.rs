//! Client request envelopes (protocol v1, `server/PROTOCOL.md`), parsed in place with simd-json.
//!
//! [`parse`] borrows the message buffer: `data` and `ref` stay as parsed values and are written
//! back out once by [`super::reply`], never copied per recipient.

use std::borrow::Cow;

use simd_json::borrowed::Value;
use simd_json::prelude::*;
use simd_json::Buffers;

pub use super::error_code::ErrorCode;
use super::{is_valid_group, json_check, Balance, Priority, MAX_GROUP_LEN};
use crate::auth::MAX_USER_LEN;
use crate::topic::{self, BadName};

/// A JSON value borrowed from the request buffer.
pub type Json<'a> = Value<'a>;

/// One request, with the `ref` the client wants echoed in the answer.
#[derive(Debug)]
pub struct Request<'a> {
    pub op: Op<'a>,
    pub reference: Option<Json<'a>>,
}

/// The operations of protocol v1.
#[derive(Debug)]
pub enum Op<'a> {
    Subscribe {
        channel: Cow<'a, str>,
        /// Join this queue group instead of subscribing plainly.
        group: Option<Cow<'a, str>>,
        /// The group's balance, when asked (else the configured default).
        balance: Option<Balance>,
        /// Also receive `join` and `leave` events of the channel.
        presence: bool,
        /// Recover what came after this position first (channels with history).
        since: Option<Position>,
    },
    /// Reads a channel's history.
    History {
        channel: Cow<'a, str>,
        since: Option<Position>,
        limit: usize,
    },
    Unsubscribe {
        channel: Cow<'a, str>,
        group: Option<Cow<'a, str>>,
    },
    /// Who is subscribed to a channel.
    Presence {
        channel: Cow<'a, str>,
    },
    Publish {
        channel: Cow<'a, str>,
        data: Json<'a>,
        priority: Priority,
    },
    Ping,
    Echo {
        data: Json<'a>,
    },
    /// A direct message to every connection of `user`.
    Send {
        user: Cow<'a, str>,
        data: Json<'a>,
        priority: Priority,
        /// The recipient must acknowledge it (it waits in the user's inbox until then).
        ack: bool,
        /// Written to the store before the `ok` (implies `ack`).
        persist: bool,
        /// The sender's id for dedup.
        msg_id: Option<Cow<'a, str>>,
        /// Deliver at this time (implies `persist`).
        schedule: Option<Schedule>,
    },
    /// Cancels a scheduled send (by the id its `ok` gave).
    Cancel {
        id: Cow<'a, str>,
    },
    /// Settles a message delivered with `"ack":true`.
    Settle {
        id: Cow<'a, str>,
        how: SettleOp<'a>,
    },
    /// Replace the connection's token (same `sub`).
    Refresh {
        token: Cow<'a, str>,
    },
}

/// What a recipient says of a message: `ack`, `nak` (with `delay_ms`) or `term` (with a
/// `reason`).
#[derive(Debug)]
pub enum SettleOp<'a> {
    Ack,
    Nak { delay_ms: u64 },
    Term { reason: Option<Cow<'a, str>> },
}

/// When a scheduled message is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// `deliver_at`, in Unix milliseconds.
    At(u64),
    /// `delay_ms` from now.
    Delay(u64),
}

/// Longest `delay_ms` of a send accepted: 10 years (`inbox.ttl_s` bounds it further).
pub const MAX_DELAY_MS: u64 = 10 * 365 * 86_400_000;

/// Where a reader of a channel stands: the epoch and offset of the last message it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: Box<str>,
    pub offset: u64,
}

/// Most messages one `history` answer holds (and the default `limit`).
pub const MAX_HISTORY_LIMIT: usize = 1000;
/// Longest epoch accepted in `since`, in bytes.
const MAX_EPOCH_LEN: usize = 64;

/// Longest `msg_id` and message `id` accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest `term` reason accepted, in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// Longest `nak` delay accepted: one day.
pub const MAX_NAK_DELAY_MS: u64 = 86_400_000;

/// A request that cannot be carried out: answered with an error frame, the connection stays open.
#[derive(Debug)]
pub struct Rejection<'a> {
    pub reference: Option<Json<'a>>,
    pub code: ErrorCode,
    pub message: String,
}

impl<'a> Rejection<'a> {
    /// The same rejection, answering `reference`.
    fn with<'b>(self, reference: Option<Json<'b>>) -> Rejection<'b> {
        Rejection {
            reference,
            code: self.code,
            message: self.message,
        }
    }

    pub fn new(reference: Option<Json<'a>>, code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            reference,
            code,
            message: message.into(),
        }
    }
}

/// Parses one text message. `buffers` are simd-json's scratch buffers, reused across calls; JSON
/// nested deeper than `max_depth` or holding a lone surrogate escape is `invalid_json` (see
/// [`super::json_check`]).
pub fn parse<'a>(
    input: &'a mut [u8],
    buffers: &mut Buffers,
    max_depth: usize,
) -> Result<Request<'a>, Rejection<'a>> {
    if let Err(problem) = json_check::check(input, max_depth) {
        return Err(Rejection::new(
            None,
            ErrorCode::InvalidJson,
            format!("invalid JSON: {problem}"),
        ));
    }
    let value = simd_json::to_borrowed_value_with_buffers(input, buffers)
        .map_err(|e| Rejection::new(None, ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(Rejection::new(
            None,
            ErrorCode::NotAnObject,
            "a request must be a JSON object",
        ));
    };
    let reference = object.remove("ref");
    let mut field = |name: &'static str| object.remove(name);
    let op = match field("op") {
        Some(Value::String(op)) => op,
        Some(_) => {
            return Err(Rejection::new(
                reference,
                ErrorCode::InvalidField,
                "\"op\" must be a string",
            ))
        }
        None => {
            return Err(Rejection::new(
                reference,
                ErrorCode::MissingField,
                "missing field \"op\"",
            ))
        }
    };
    let op = match &*op {
        "subscribe" | "unsubscribe" | "publish" | "presence" | "history" => {
            let pattern_ok = matches!(&*op, "subscribe" | "unsubscribe");
            let channel = match channel(field("channel"), pattern_ok) {
                Ok(channel) => channel,
                Err((code, message)) => return Err(Rejection::new(reference, code, message)),
            };
            let invalid = |text: &str| Rejection::new(None, ErrorCode::InvalidField, text);
            let group = match field("group") {
                None => None,
                Some(Value::String(group)) if is_valid_group(&group) && op != "publish" => {
                    Some(group)
                }
                Some(_) => {
                    let text = format!("\"group\" must be 1-{MAX_GROUP_LEN} bytes of [A-Za-z0-9_:-], on subscribe and unsubscribe");
                    return Err(invalid(&text).with(reference));
                }
            };
            match &*op {
                "subscribe" => {
                    let balance = match field("balance") {
                        None => None,
                        Some(b) => match b.as_str().and_then(Balance::parse) {
                            Some(b) if group.is_some() => Some(b),
                            _ => {
                                let text = "\"balance\" must be \"least_loaded\" or \"round_robin\", with a \"group\"";
                                return Err(invalid(text).with(reference));
                            }
                        },
                    };
                    let presence = match field("presence") {
                        None => false,
                        Some(Value::Static(simd_json::StaticNode::Bool(b))) => b,
                        Some(_) => {
                            return Err(
                                invalid("\"presence\" must be true or false").with(reference)
                            );
                        }
                    };
                    if presence && (group.is_some() || topic::is_pattern(&channel)) {
                        let text = "\"presence\" is for a plain subscription to a channel, not a pattern or a group";
                        return Err(invalid(text).with(reference));
                    }
                    let since = match since(field("since")) {
                        Ok(since) => since,
                        Err(rejection) => return Err(rejection.with(reference)),
                    };
                    if since.is_some() && (group.is_some() || topic::is_pattern(&channel)) {
                        let text = "\"since\" is for a plain subscription to a channel, not a pattern or a group";
                        return Err(invalid(text).with(reference));
                    }
                    Op::Subscribe {
                        channel,
                        group,
                        balance,
                        presence,
                        since,
                    }
                }
                "history" => {
                    if group.is_some() {
                        let text = "\"group\" is for subscribe and unsubscribe";
                        return Err(invalid(text).with(reference));
                    }
                    let since = match since(field("since")) {
                        Ok(since) => since,
                        Err(rejection) => return Err(rejection.with(reference)),
                    };
                    let limit = match field("limit") {
                        None => MAX_HISTORY_LIMIT,
                        Some(v) => {
                            match v
                                .as_u64()
                                .filter(|l| (1..=MAX_HISTORY_LIMIT as u64).contains(l))
                            {
                                Some(l) => l as usize,
                                None => {
                                    let text = format!("\"limit\" must be an integer from 1 to {MAX_HISTORY_LIMIT}");
                                    return Err(invalid(&text).with(reference));
                                }
                            }
                        }
                    };
                    Op::History {
                        channel,
                        since,
                        limit,
                    }
                }
                "unsubscribe" => Op::Unsubscribe { channel, group },
                "presence" => Op::Presence { channel },
                _ => {
                    let priority = match priority(field("priority")) {
                        Ok(priority) => priority,
                        Err(rejection) => return Err(rejection.with(reference)),
                    };
                    match field("data") {
                        Some(data) => Op::Publish {
                            channel,
                            data,
                            priority,
                        },
                        None => return Err(missing_data(reference)),
                    }
                }
            }
        }
        "send" => {
            let user = match field("user") {
                Some(Value::String(user)) if (1..=MAX_USER_LEN).contains(&user.len()) => user,
                Some(_) => {
                    return Err(Rejection::new(
                        reference,
                        ErrorCode::InvalidField,
                        format!("\"user\" must be a string of 1-{MAX_USER_LEN} bytes"),
                    ))
                }
                None => {
                    return Err(Rejection::new(
                        reference,
                        ErrorCode::MissingField,
                        "missing field \"user\"",
                    ))
                }
            };
            let priority = match priority(field("priority")) {
                Ok(priority) => priority,
                Err(rejection) => return Err(rejection.with(reference)),
            };
            let flags = (flag(field("ack"), "ack"), flag(field("persist"), "persist"));
            let (ack, persist) = match flags {
                (Ok(ack), Ok(persist)) => (ack, persist),
                (Err(rejection), _) | (_, Err(rejection)) => return Err(rejection.with(reference)),
            };
            let msg_id = match field("msg_id") {
                None => None,
                Some(value) => match id_string(value, "msg_id") {
                    Ok(id) => Some(id),
                    Err(rejection) => return Err(rejection.with(reference)),
                },
            };
            let schedule = match (field("deliver_at"), field("delay_ms")) {
                (None, None) => None,
                (Some(Value::String(at)), None) => match super::time::parse_rfc3339_ms(&at) {
                    Some(ms) => Some(Schedule::At(ms)),
                    None => {
                        let text = "\"deliver_at\" must be an RFC 3339 time such as \"2026-12-02T19:30:00Z\"";
                        return Err(Rejection::new(reference, ErrorCode::InvalidField, text));
                    }
                },
                (None, Some(delay)) => match delay.as_u64().filter(|d| *d <= MAX_DELAY_MS) {
                    Some(ms) => Some(Schedule::Delay(ms)),
                    None => {
                        let text =
                            format!("\"delay_ms\" must be an integer from 0 to {MAX_DELAY_MS}");
                        return Err(Rejection::new(reference, ErrorCode::InvalidField, text));
                    }
                },
                (Some(_), None) => {
                    let text = "\"deliver_at\" must be an RFC 3339 time string";
                    return Err(Rejection::new(reference, ErrorCode::InvalidField, text));
                }
                (Some(_), Some(_)) => {
                    let text = "give \"deliver_at\" or \"delay_ms\", not both";
                    return Err(Rejection::new(reference, ErrorCode::InvalidField, text));
                }
            };
            let persist = persist || schedule.is_some();
            match field("data") {
                Some(data) => Op::Send {
                    user,
                    data,
                    priority,
                    ack: ack || persist,
                    persist,
                    msg_id,
                    schedule,
                },
                None => return Err(missing_data(reference)),
            }
        }
        "ack" | "nak" | "term" | "cancel" => {
            let id = match field("id") {
                Some(value) => match id_string(value, "id") {
                    Ok(id) => id,
                    Err(rejection) => return Err(rejection.with(reference)),
                },
                None => {
                    return Err(Rejection::new(
                        reference,
                        ErrorCode::MissingField,
                        "missing field \"id\"",
                    ))
                }
            };
            let how = match &*op {
                "cancel" => {
                    return Ok(Request {
                        op: Op::Cancel { id },
                        reference,
                    })
                }
                "ack" => SettleOp::Ack,
                "nak" => match field("delay_ms") {
                    None => SettleOp::Nak { delay_ms: 0 },
                    Some(value) => match value.as_u64().filter(|d| *d <= MAX_NAK_DELAY_MS) {
                        Some(delay_ms) => SettleOp::Nak { delay_ms },
                        None => {
                            let text = format!(
                                "\"delay_ms\" must be an integer from 0 to {MAX_NAK_DELAY_MS}"
                            );
                            return Err(Rejection::new(reference, ErrorCode::InvalidField, text));
                        }
                    },
                },
                _ => match field("reason") {
                    None => SettleOp::Term { reason: None },
                    Some(Value::String(reason)) if reason.len() <= MAX_REASON_LEN => {
                        SettleOp::Term {
                            reason: Some(reason),
                        }
                    }
                    Some(_) => {
                        let text = format!(
                            "\"reason\" must be a string of at most {MAX_REASON_LEN} bytes"
                        );
                        return Err(Rejection::new(reference, ErrorCode::InvalidField, text));
                    }
                },
            };
            Op::Settle { id, how }
        }
        "ping" => Op::Ping,
        "refresh" => match field("token") {
            Some(Value::String(token)) => Op::Refresh { token },
            Some(_) => {
                return Err(Rejection::new(
                    reference,
                    ErrorCode::InvalidField,
                    "\"token\" must be a string (a JWT)",
                ))
            }
            None => {
                return Err(Rejection::new(
                    reference,
                    ErrorCode::MissingField,
                    "missing field \"token\"",
                ))
            }
        },
        "echo" => match field("data") {
            Some(data) => Op::Echo { data },
            None => return Err(missing_data(reference)),
        },
        other => {
            let mut shown: String = other.chars().take(64).collect();
            if shown.len() < other.len() {
                shown.push('…');
            }
            return Err(Rejection::new(
                reference,
                ErrorCode::UnknownOp,
                format!(
                    "unknown op {shown:?}; expected subscribe, unsubscribe, publish, send, ack, nak, term, cancel, presence, history, ping, echo or refresh"
                ),
            ));
        }
    };
    Ok(Request { op, reference })
}

/// Checks a `priority` field (default `normal`); the rejection's `ref` is filled in by the caller.
fn priority(value: Option<Json<'_>>) -> Result<Priority, Rejection<'static>> {
    match value {
        None => Ok(Priority::Normal),
        Some(p) => p.as_str().and_then(Priority::parse).ok_or_else(|| {
            Rejection::new(
                None,
                ErrorCode::InvalidField,
                "\"priority\" must be one of \"low\", \"normal\", \"high\", \"critical\"",
            )
        }),
    }
}

/// Checks a `since` field: `{"epoch":"<1-64 bytes>","offset":<integer>}`.
fn since(value: Option<Json<'_>>) -> Result<Option<Position>, Rejection<'static>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let epoch = value.get("epoch").and_then(|e| e.as_str());
    let offset = value.get("offset").and_then(|o| o.as_u64());
    match (epoch, offset) {
        (Some(epoch), Some(offset)) if (1..=MAX_EPOCH_LEN).contains(&epoch.len()) => {
            Ok(Some(Position {
                epoch: epoch.into(),
                offset,
            }))
        }
        _ => Err(Rejection::new(
            None,
            ErrorCode::InvalidField,
            format!("\"since\" must be {{\"epoch\":<string of 1-{MAX_EPOCH_LEN} bytes>,\"offset\":<integer>}}"),
        )),
    }
}

/// Checks a `true`/`false` field (default false) named `name`.
fn flag(value: Option<Json<'_>>, name: &str) -> Result<bool, Rejection<'static>> {
    match value {
        None => Ok(false),
        Some(Value::Static(simd_json::StaticNode::Bool(b))) => Ok(b),
        Some(_) => Err(Rejection::new(
            None,
            ErrorCode::InvalidField,
            format!("\"{name}\" must be true or false"),
        )),
    }
}

/// Checks an id field (`msg_id`, `id`): a string of 1 to [`MAX_ID_LEN`] bytes.
fn id_string<'a>(value: Json<'a>, name: &str) -> Result<Cow<'a, str>, Rejection<'static>> {
    match value {
        Value::String(id) if (1..=MAX_ID_LEN).contains(&id.len()) => Ok(id),
        _ => Err(Rejection::new(
            None,
            ErrorCode::InvalidField,
            format!("\"{name}\" must be a string of 1-{MAX_ID_LEN} bytes"),
        )),
    }
}

fn missing_data(reference: Option<Json<'_>>) -> Rejection<'_> {
    Rejection::new(reference, ErrorCode::MissingField, "missing field \"data\"")
}

/// Checks a `channel` field: a channel name, or with `pattern_ok` (subscribing) a pattern too.
fn channel(value: Option<Json<'_>>, pattern_ok: bool) -> Result<Cow<'_, str>, (ErrorCode, String)> {
    let name = match value {
        None => return Err((ErrorCode::MissingField, "missing field \"channel\"".into())),
        Some(Value::String(name)) => name,
        Some(_) => return Err(bad_channel(BadName::Syntax)),
    };
    let checked = if pattern_ok {
        topic::check_pattern(&name)
    } else {
        topic::check_channel(&name)
    };
    checked.map(|()| name).map_err(bad_channel)
}

fn bad_channel(why: BadName) -> (ErrorCode, String) {
    (ErrorCode::BadChannel, format!("\"channel\" {why}"))
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
