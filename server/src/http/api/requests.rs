//! The API's requests that a WebSocket client can make too: publish, send, broadcast,
//! presence and history. Each runs through the very code a `/ws` request does
//! ([`dispatch::handle_request`]) on a short-lived connection of the API's own, with every
//! permission and no socket: its answer frame is read back from its outbox and turned into the
//! HTTP answer. One publish path, not two.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use hyper::{Response, StatusCode};
use simd_json::prelude::*;
use simd_json::OwnedValue;
use wsedge_core::auth::Permissions;
use wsedge_core::limits::ConnLimits;

use super::common::{bad_request, percent_decode, ANSWER_TIMEOUT};
use crate::conn::{Conn, Identity};
use crate::http::response::{error, json, Body};
use crate::shard::{dispatch, Shard};

/// Most channels one `POST /api/broadcast` names.
pub const MAX_BROADCAST_CHANNELS: usize = 100;

/// An API connection, registered with its shard and broker for one request.
struct ApiConn<'a> {
    shard: &'a Shard,
    conn: Rc<Conn>,
}

impl<'a> ApiConn<'a> {
    fn open(shard: &'a Shard) -> Self {
        let identity = Identity {
            user: None,
            expires_at: None,
            permissions: Arc::new(Permissions::all()),
            api: true,
        };
        ApiConn {
            shard,
            conn: shard.open(false, identity),
        }
    }

    /// Runs `request` (an object; its `op` and `ref` are set here) and returns the answer:
    /// `Ok` with the reply's fields but `op` and `ref` (an `ok` gets `"ok":true`), or `Err`
    /// with the refusal.
    async fn ask(&self, op: &str, mut request: OwnedValue) -> Result<OwnedValue, Refusal> {
        let Some(object) = request.as_object_mut() else {
            let text = "the body must be a JSON object";
            return Err(Refusal::new(StatusCode::BAD_REQUEST, "not_an_object", text));
        };
        object.insert("op".into(), OwnedValue::from(op));
        object.insert("ref".into(), OwnedValue::from("api"));
        let mut payload = request.encode().into_bytes();
        let config = self.shard.config();
        let mut limits = ConnLimits::new(&config.rate_limits, Instant::now());
        dispatch::handle_request(
            self.shard,
            &self.conn,
            &mut payload,
            &mut limits,
            Instant::now(),
        );
        let answer = async {
            loop {
                let queued = self.conn.take_queued();
                if let Some(answer) = answer_in(&queued) {
                    return answer;
                }
                self.conn.queued().await;
            }
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| {
                let text = "the request was not answered in time";
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", text)
            })?;
        into_result(answer)
    }
}

impl Drop for ApiConn<'_> {
    fn drop(&mut self) {
        self.shard.disconnect(self.conn.id());
        self.shard.remove(self.conn.id());
    }
}

/// The first answer to `"ref":"api"` among `frames` (unmasked server frames, back to back).
fn answer_in(mut frames: &[u8]) -> Option<OwnedValue> {
    while frames.len() >= 2 {
        let (header, length): (usize, usize) = match frames[1] & 0x7f {
            126 if frames.len() >= 4 => (4, u16::from_be_bytes([frames[2], frames[3]]) as usize),
            127 if frames.len() >= 10 => {
                let bytes: [u8; 8] = frames[2..10].try_into().ok()?;
                (10, u64::from_be_bytes(bytes) as usize)
            }
            n @ 0..=125 => (2, n as usize),
            _ => return None,
        };
        let end = header.checked_add(length).filter(|&e| e <= frames.len())?;
        let mut payload = frames[header..end].to_vec();
        frames = &frames[end..];
        let Ok(value) = simd_json::to_owned_value(&mut payload) else {
            continue;
        };
        if value.get_str("ref") == Some("api") {
            return Some(value);
        }
    }
    None
}

/// A request refused: its HTTP status, code and message.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &str, message: &str) -> Self {
        Refusal {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    fn response(&self) -> Response<Body> {
        error(self.status, &self.code, &self.message)
    }
}

/// An answer frame's JSON as the HTTP answer: an error's code picks the status.
fn into_result(mut answer: OwnedValue) -> Result<OwnedValue, Refusal> {
    let op = answer.get_str("op").unwrap_or("").to_string();
    if op == "error" {
        let code = answer.get_str("code").unwrap_or("error");
        let message = answer.get_str("message").unwrap_or("");
        return Err(Refusal::new(status_of(code), code, message));
    }
    if let Some(object) = answer.as_object_mut() {
        object.remove("ref");
        object.remove("op");
        if op == "ok" {
            object.insert("ok".into(), OwnedValue::from(true));
        }
    }
    Ok(answer)
}

/// The HTTP status of a protocol error code.
pub(super) fn status_of(code: &str) -> StatusCode {
    match code {
        "forbidden" => StatusCode::FORBIDDEN,
        "invalid_token" => StatusCode::UNAUTHORIZED,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "overloaded" | "store_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "inbox_full" | "not_subscribed" | "too_many_subscriptions" => StatusCode::CONFLICT,
        "unknown_message" | "history_off" => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn ok(value: &OwnedValue) -> Response<Body> {
    json(StatusCode::OK, value.encode())
}

/// `POST /api/publish`: the body is a `publish` request without `op`.
pub(super) async fn publish(shard: &Shard, body: OwnedValue) -> Response<Body> {
    match ApiConn::open(shard).ask("publish", body).await {
        Ok(answer) => ok(&answer),
        Err(refused) => refused.response(),
    }
}

/// `POST /api/send`: the body is a `send` request without `op`.
pub(super) async fn send(shard: &Shard, body: OwnedValue) -> Response<Body> {
    match ApiConn::open(shard).ask("send", body).await {
        Ok(answer) => ok(&answer),
        Err(refused) => refused.response(),
    }
}

/// `POST /api/broadcast`: `{"channels":[...], ...}` publishes the rest of the body to each
/// channel, in order; 200 when all went out, 207 with each one's result when some did not.
pub(super) async fn broadcast(shard: &Shard, mut body: OwnedValue) -> Response<Body> {
    let channels = match body.as_object_mut().and_then(|o| o.remove("channels")) {
        Some(OwnedValue::Array(channels)) => channels,
        _ => {
            return bad_request(
                "missing_field",
                "give \"channels\": an array of channel names",
            )
        }
    };
    if channels.is_empty() || channels.len() > MAX_BROADCAST_CHANNELS {
        let text = format!("\"channels\" holds 1-{MAX_BROADCAST_CHANNELS} names");
        return bad_request("invalid_field", &text);
    }
    if body.contains_key("channel") {
        return bad_request("invalid_field", "give \"channels\", not \"channel\"");
    }
    let api = ApiConn::open(shard);
    let mut results = Vec::with_capacity(channels.len());
    let mut failed = 0;
    for channel in channels.into_iter() {
        let mut request = body.clone();
        if let Some(object) = request.as_object_mut() {
            object.insert("channel".into(), channel.clone());
        }
        let mut result = match api.ask("publish", request).await {
            Ok(answer) => answer,
            Err(refused) => {
                failed += 1;
                let mut result = OwnedValue::object();
                result.try_insert("status", refused.status.as_u16());
                result.try_insert("error", refused.code);
                result.try_insert("message", refused.message);
                result
            }
        };
        if let Some(object) = result.as_object_mut() {
            object.insert("channel".into(), channel);
        }
        results.push(result);
    }
    let mut answer = OwnedValue::object();
    answer.try_insert("failed", failed);
    answer.try_insert("results", OwnedValue::Array(Box::new(results)));
    let status = match failed {
        0 => StatusCode::OK,
        _ => StatusCode::MULTI_STATUS,
    };
    json(status, answer.encode())
}

/// `GET /api/presence/{channel}`.
pub(super) async fn presence(shard: &Shard, channel: String) -> Response<Body> {
    let mut request = OwnedValue::object();
    request.try_insert("channel", channel);
    match ApiConn::open(shard).ask("presence", request).await {
        Ok(answer) => ok(&answer),
        Err(refused) => refused.response(),
    }
}

/// `GET /api/history/{channel}?limit=N&epoch=E&offset=O`.
pub(super) async fn history(shard: &Shard, channel: String, query: &str) -> Response<Body> {
    let mut request = OwnedValue::object();
    request.try_insert("channel", channel);
    let (mut epoch, mut offset) = (None, None);
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        let value = percent_decode(value);
        match key {
            "limit" => match value.parse::<u64>() {
                Ok(limit) => {
                    request.try_insert("limit", limit);
                }
                Err(_) => return bad_request("invalid_parameter", "limit is a count"),
            },
            "epoch" => epoch = Some(value),
            "offset" => match value.parse::<u64>() {
                Ok(n) => offset = Some(n),
                Err(_) => return bad_request("invalid_parameter", "offset is a number"),
            },
            _ => {}
        }
    }
    match (epoch, offset) {
        (Some(epoch), Some(offset)) => {
            let mut since = OwnedValue::object();
            since.try_insert("epoch", epoch);
            since.try_insert("offset", offset);
            request.try_insert("since", since);
        }
        (None, None) => {}
        _ => return bad_request("invalid_parameter", "give epoch and offset together"),
    }
    match ApiConn::open(shard).ask("history", request).await {
        Ok(answer) => ok(&answer),
        Err(refused) => refused.response(),
    }
}
