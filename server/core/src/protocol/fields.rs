//! The checks of single request fields, shared by the ops that take them, and the types they
//! answer with. Their rejections carry no `ref`: the caller fills it in.

use std::borrow::Cow;

use simd_json::borrowed::Value;
use simd_json::prelude::*;

use super::error_code::ErrorCode;
use super::Priority;
use crate::topic::{self, BadName};

/// A JSON value borrowed from the request buffer.
pub type Json<'a> = Value<'a>;

/// Longest epoch accepted in `since`, in bytes.
pub const MAX_EPOCH_LEN: usize = 64;
/// Longest `msg_id` and message `id` accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Where a reader of a channel stands: the epoch and offset of the last message it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: Box<str>,
    pub offset: u64,
}

/// A request that cannot be carried out: answered with an error frame, the connection stays open.
#[derive(Debug)]
pub struct Rejection<'a> {
    pub reference: Option<Json<'a>>,
    pub code: ErrorCode,
    pub message: String,
}

impl<'a> Rejection<'a> {
    /// The same rejection, answering `reference`.
    pub(super) fn with<'b>(self, reference: Option<Json<'b>>) -> Rejection<'b> {
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

/// Checks `deliver_at` (an RFC 3339 time) and `delay_ms` (0 to [`MAX_DELAY_MS`]): at most one.
pub(super) fn schedule(
    deliver_at: Option<Json<'_>>,
    delay_ms: Option<Json<'_>>,
) -> Result<Option<Schedule>, Rejection<'static>> {
    let invalid = |text: &str| Rejection::new(None, ErrorCode::InvalidField, text);
    match (deliver_at, delay_ms) {
        (None, None) => Ok(None),
        (Some(Value::String(at)), None) => match super::time::parse_rfc3339_ms(&at) {
            Some(ms) => Ok(Some(Schedule::At(ms))),
            None => Err(invalid(
                "\"deliver_at\" must be an RFC 3339 time such as \"2026-12-02T19:30:00Z\"",
            )),
        },
        (None, Some(delay)) => match delay.as_u64().filter(|d| *d <= MAX_DELAY_MS) {
            Some(ms) => Ok(Some(Schedule::Delay(ms))),
            None => Err(invalid(&format!(
                "\"delay_ms\" must be an integer from 0 to {MAX_DELAY_MS}"
            ))),
        },
        (Some(_), None) => Err(invalid("\"deliver_at\" must be an RFC 3339 time string")),
        (Some(_), Some(_)) => Err(invalid("give \"deliver_at\" or \"delay_ms\", not both")),
    }
}

/// Checks a `priority` field (default `normal`); the rejection's `ref` is filled in by the caller.
pub(super) fn priority(value: Option<Json<'_>>) -> Result<Priority, Rejection<'static>> {
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
pub(super) fn since(value: Option<Json<'_>>) -> Result<Option<Position>, Rejection<'static>> {
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
pub(super) fn flag(value: Option<Json<'_>>, name: &str) -> Result<bool, Rejection<'static>> {
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
pub(super) fn id_string<'a>(
    value: Json<'a>,
    name: &str,
) -> Result<Cow<'a, str>, Rejection<'static>> {
    match value {
        Value::String(id) if (1..=MAX_ID_LEN).contains(&id.len()) => Ok(id),
        _ => Err(Rejection::new(
            None,
            ErrorCode::InvalidField,
            format!("\"{name}\" must be a string of 1-{MAX_ID_LEN} bytes"),
        )),
    }
}

pub(super) fn missing_data(reference: Option<Json<'_>>) -> Rejection<'_> {
    Rejection::new(reference, ErrorCode::MissingField, "missing field \"data\"")
}

/// Checks a `channel` field: a channel name, or with `pattern_ok` (subscribing) a pattern too.
pub(super) fn channel(
    value: Option<Json<'_>>,
    pattern_ok: bool,
) -> Result<Cow<'_, str>, (ErrorCode, String)> {
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
