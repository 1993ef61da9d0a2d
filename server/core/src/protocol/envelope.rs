//! Client request envelopes (protocol v1, `server/PROTOCOL.md`), parsed in place with simd-json.
//!
//! [`parse`] borrows the message buffer: `data` and `ref` stay as parsed values and are written
//! back out once by [`super::reply`], never copied per recipient.

use std::borrow::Cow;

use simd_json::borrowed::Value;
use simd_json::prelude::*;
use simd_json::Buffers;

pub use super::error_code::ErrorCode;
use super::fields::{channel, flag, id_string, missing_data, priority, schedule, since};
pub use super::fields::{
    Json, Position, Rejection, Schedule, MAX_DELAY_MS, MAX_EPOCH_LEN, MAX_ID_LEN,
};
use super::{is_valid_group, json_check, Balance, Priority, MAX_GROUP_LEN};
use crate::auth::MAX_USER_LEN;
use crate::topic;

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
        /// Deliveries must be acknowledged (see `ack`, `nak`, `term`).
        ack: bool,
        /// An acknowledged group that keeps its messages across restarts, members or not.
        durable: bool,
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
        /// The `ok` waits until every durable group of the channel has stored the message.
        persist: bool,
        /// Idempotency key: a repeat within the dedup window is not queued again for an
        /// acknowledged group.
        msg_id: Option<Cow<'a, str>>,
        /// Publish at this time instead (kept in the store until then).
        schedule: Option<Schedule>,
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
    /// Cancels a scheduled send or publish (by the id its `ok` gave).
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

/// Most messages one `history` answer holds (and the default `limit`).
pub const MAX_HISTORY_LIMIT: usize = 1000;
/// Longest `term` reason accepted, in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// Longest `nak` delay accepted: one day.
pub const MAX_NAK_DELAY_MS: u64 = 86_400_000;

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
                    let flags = (flag(field("ack"), "ack"), flag(field("durable"), "durable"));
                    let (ack, durable) = match flags {
                        (Ok(ack), Ok(durable)) => (ack, durable),
                        (Err(rejection), _) | (_, Err(rejection)) => {
                            return Err(rejection.with(reference))
                        }
                    };
                    if durable && !(ack && group.is_some()) {
                        let text =
                            "\"durable\" is for a subscribe with \"ack\":true and a \"group\"";
                        return Err(invalid(text).with(reference));
                    }
                    if ack && (presence || since.is_some()) {
                        let text = "\"ack\" does not go with \"presence\" or \"since\"";
                        return Err(invalid(text).with(reference));
                    }
                    Op::Subscribe {
                        channel,
                        group,
                        balance,
                        presence,
                        since,
                        ack,
                        durable,
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
                    let persist = match flag(field("persist"), "persist") {
                        Ok(persist) => persist,
                        Err(rejection) => return Err(rejection.with(reference)),
                    };
                    let msg_id = match field("msg_id").map(|v| id_string(v, "msg_id")) {
                        None => None,
                        Some(Ok(id)) => Some(id),
                        Some(Err(rejection)) => return Err(rejection.with(reference)),
                    };
                    let schedule = match schedule(field("deliver_at"), field("delay_ms")) {
                        Ok(schedule) => schedule,
                        Err(rejection) => return Err(rejection.with(reference)),
                    };
                    match field("data") {
                        Some(data) => Op::Publish {
                            channel,
                            data,
                            priority,
                            persist,
                            msg_id,
                            schedule,
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
            let schedule = match schedule(field("deliver_at"), field("delay_ms")) {
                Ok(schedule) => schedule,
                Err(rejection) => return Err(rejection.with(reference)),
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

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
