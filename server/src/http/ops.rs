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

/// The dashboard page (HTML, CSS and JS in one file, embedded: no CDN, works offline).
const DASHBOARD: &str = include_str!("dashboard.html");

/// `/dashboard`: the page; its figures come from `/api/stats` with the key typed into it.
pub fn dashboard() -> Response<Body> {
    let mut response = Response::new(Body::new(DASHBOARD.into()));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}
