//! The HTTP server API under `/api/`, authenticated with `Authorization: Bearer <key>` from
//! `[api] keys`. JSON in and out; documented in `server/API.md`.
//!
//! - What a client can do on `/ws`, through the same code ([`requests`]): `POST /api/publish`,
//!   `POST /api/send`, `POST /api/broadcast`, `GET /api/presence/{channel}`,
//!   `GET /api/history/{channel}`.
//! - The dead-letter queue ([`dlq`]): `GET /api/dlq`, `POST /api/dlq/{id}/replay`,
//!   `DELETE /api/dlq/{id}`.
//! - Administration ([`admin`]): `GET /api/stats` (the dashboard's figures), `GET
//!   /api/alerts`, `DELETE /api/groups`, `POST /api/disconnect`, and with `[api]
//!   fault_injection` `POST /api/debug/stall`.
//!
//! Errors are JSON `{"error":code,"message":...}`: 400 (a bad body or parameter), 401 (no
//! valid key), 403, 404 (no such route, dead letter, or history), 405, 409, 413 (a body over
//! `limits.max_message_size`), 429, 503 (overloaded, or the store or a shard did not answer in
//! time).

mod admin;
mod common;
mod dlq;
mod requests;

use std::rc::Rc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION};
use hyper::{Method, Request, Response, StatusCode};
use simd_json::OwnedValue;
use wsedge_core::protocol::json_check;

use super::response::{error, Body};
use crate::shard::Shard;
use common::{bad_request, percent_decode, Refused};

/// Serves one `/api/...` request.
pub async fn handle(req: Request<Incoming>, shard: &Rc<Shard>) -> Response<Body> {
    if let Some(refused) = authorize(&req, shard) {
        return refused;
    }
    let path = req.uri().path().trim_start_matches("/api/").to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["publish" | "send" | "broadcast" | "disconnect"]) => {
            let config = shard.config();
            let body = match read_json(req, config.max_message_size, config.max_json_depth).await {
                Ok(body) => body,
                Err(refused) => return *refused,
            };
            match segments[0] {
                "publish" => requests::publish(shard, body).await,
                "send" => requests::send(shard, body).await,
                "broadcast" => requests::broadcast(shard, body).await,
                _ => admin::disconnect(shard, body).await,
            }
        }
        (&Method::GET, ["presence", ..]) | (&Method::GET, ["history", ..]) => {
            let channel = percent_decode(path.split_once('/').map_or("", |(_, c)| c));
            if channel.is_empty() {
                return bad_request("missing_field", "give the channel: /api/<what>/{channel}");
            }
            match segments[0] {
                "presence" => requests::presence(shard, channel).await,
                _ => requests::history(shard, channel, &query).await,
            }
        }
        (&Method::GET, ["stats"]) => admin::stats(shard, &query),
        (&Method::GET, ["alerts"]) => admin::alerts(shard),
        (&Method::GET, ["dlq"]) => dlq::list(shard, &query).await,
        (&Method::POST, ["dlq", id, "replay"]) => match dead_id(id) {
            Ok(id) => dlq::replay(shard, id).await,
            Err(bad) => *bad,
        },
        (&Method::DELETE, ["dlq", id]) => match dead_id(id) {
            Ok(id) => dlq::delete(shard, id).await,
            Err(bad) => *bad,
        },
        (&Method::DELETE, ["groups"]) => admin::delete_group(shard, &query).await,
        (&Method::POST, ["debug", "stall"]) => admin::stall(shard, &query),
        (_, ["publish" | "send" | "broadcast" | "disconnect" | "debug"] | ["debug", _]) => {
            not_allowed("POST", "POST")
        }
        (_, ["presence" | "history" | "stats" | "alerts", ..]) => not_allowed("GET", "GET"),
        (_, ["groups"]) => not_allowed("DELETE", "DELETE /api/groups?channel=C&group=G"),
        (_, ["dlq"]) => not_allowed("GET", DLQ_ROUTES),
        (_, ["dlq", _]) => not_allowed("DELETE", DLQ_ROUTES),
        (_, ["dlq", _, "replay"]) => not_allowed("POST", DLQ_ROUTES),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no API route for /api/{path}; see server/API.md"),
        ),
    }
}

const DLQ_ROUTES: &str = "GET /api/dlq, POST /api/dlq/{id}/replay, DELETE /api/dlq/{id}";

/// 405 with `Allow: allow`; `what` says it in the JSON reason.
fn not_allowed(allow: &'static str, what: &str) -> Response<Body> {
    let mut refused = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this route takes {what}"),
    );
    refused
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    refused
}

/// The request's body as a JSON object: 413 over `max_bytes`, 400 when not a JSON object or
/// nested deeper than `max_depth`.
async fn read_json(
    req: Request<Incoming>,
    max_bytes: usize,
    max_depth: usize,
) -> Result<OwnedValue, Refused> {
    let body = match Limited::new(req.into_body(), max_bytes).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let text = format!("the body is over limits.max_message_size ({max_bytes} bytes)");
            return Err(Box::new(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &text,
            )));
        }
        Err(e) => return Err(Box::new(bad_request("bad_body", &e.to_string()))),
    };
    // simd-json builds values recursively: too deep a body would overflow the shard's stack.
    if let Err(problem) = json_check::check(&body, max_depth) {
        return Err(Box::new(bad_request("invalid_json", &problem.to_string())));
    }
    let mut bytes = body.to_vec();
    match simd_json::to_owned_value(&mut bytes) {
        Ok(value @ OwnedValue::Object(_)) => Ok(value),
        Ok(_) => Err(Box::new(bad_request(
            "not_an_object",
            "the body must be a JSON object",
        ))),
        Err(e) => Err(Box::new(bad_request(
            "invalid_json",
            &format!("invalid JSON: {e}"),
        ))),
    }
}

/// `None` when the request carries one of `api.keys`; else the 401.
fn authorize<B>(req: &Request<B>, shard: &Shard) -> Option<Response<Body>> {
    let keys = &shard.config().api.keys;
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = presented.is_some_and(|p| keys.iter().any(|k| same(k.as_bytes(), p.as_bytes())));
    if valid {
        return None;
    }
    let message = if keys.is_empty() {
        "this server has no API keys ([api] keys)"
    } else {
        "give one of [api] keys as Authorization: Bearer <key>"
    };
    Some(error(StatusCode::UNAUTHORIZED, "unauthorized", message))
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn dead_id(text: &str) -> Result<u64, Refused> {
    text.parse().map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "a dead letter's id is a positive integer",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
