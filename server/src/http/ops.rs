//! The operator's read-only endpoints: `GET|HEAD /health`, which follows the messages (see
//! [`crate::shard::health`]), and `GET /metrics` in the Prometheus text format.

use std::sync::atomic::Ordering;

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use wsedge_core::protocol::reply::write_json_string;

use super::response::{json, Body};
use crate::conn::unix_ms;
use crate::metrics;
use crate::shard::Shard;

/// `/health`: 200 `{"status":"ok",...}`, or 503 `{"status":"degraded","failing":[...],...}`
/// when a heartbeat between shards or the store's canary is older than 3 s.
pub fn health(shard: &Shard) -> Response<Body> {
    let shared = shard.shared();
    let failing = shared.health.failing(unix_ms());
    let (status, word) = match failing.is_empty() {
        true => (StatusCode::OK, "ok"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
    };
    let mut body = format!(
        r#"{{"status":"{word}","shards":{},"connections":{},"max_connections":{},"failing":["#,
        shared.config.shards,
        shared.connections.load(Ordering::Relaxed),
        shared.budget.max_connections
    )
    .into_bytes();
    for (i, line) in failing.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_json_string(&mut body, line);
    }
    body.extend_from_slice(b"]}");
    json(status, body)
}

/// `/metrics`.
pub fn metrics(shard: &Shard) -> Response<Body> {
    let shared = shard.shared();
    let text = metrics::render(&shared.metrics, &shared.live());
    let mut response = Response::new(Body::new(text.into()));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
