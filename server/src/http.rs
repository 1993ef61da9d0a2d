//! HTTP on the WebSocket port, through hyper: `GET /ws` and `GET /echo` upgrade, `GET /health`
//! reports, anything else is 404. Errors are JSON `{"error":..., "message":...}` with a status.
//!
//! Upgrades follow RFC 6455 §4.2.1 strictly: HTTP/1.1 or later, a `Host` header, and a
//! `Sec-WebSocket-Key` that decodes to 16 bytes, else 400. A request head over
//! `server.max_request_bytes` gets 431 from hyper.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::connection::{self, Conn, Endpoint};
use crate::protocol::reply::{self, write_json_string};
use crate::protocol::Priority;
use crate::shard::{Pending, Shard, Slot};

/// Subprotocol for plain JSON text frames (the default).
pub const SUBPROTOCOL: &str = "wsedge.v1";
/// Subprotocol whose large messages arrive lz4-compressed in binary frames.
pub const SUBPROTOCOL_LZ4: &str = "wsedge.v1.lz4";

type Body = Full<Bytes>;

/// Serves one TCP connection's HTTP requests until it upgrades, closes, or runs out of
/// `handshake_timeout`. `pending` counts it against `server.handshake_budget_bytes` meanwhile.
pub async fn serve(stream: TcpStream, shard: Rc<Shard>, pending: Pending) {
    let timeout = shard.config().handshake_timeout;
    let max_request_bytes = shard.config().max_request_bytes;
    let service = hyper::service::service_fn(move |req| {
        let response = route(req, &shard);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(max_request_bytes)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    match tokio::time::timeout(timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("http: {e}"),
        Err(_) => tracing::debug!("http: handshake_timeout passed"),
    }
    drop(pending);
}

/// What a refused TCP connection is told before it is closed (see `server.max_connections`
/// and `server.handshake_budget_bytes`); it fits any socket's send buffer, so one non-blocking
/// write sends it.
pub const AT_CAPACITY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 69\r\n\r\n\
{\"error\":\"at_capacity\",\"message\":\"server is at its connection limit\"}";

fn route(req: Request<Incoming>, shard: &Rc<Shard>) -> Response<Body> {
    let path = req.uri().path();
    let endpoint = match path {
        "/ws" => Some(Endpoint::Protocol),
        "/echo" if shard.config().echo_endpoint => Some(Endpoint::Echo),
        "/health" => None,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {path}; try /ws or /health"),
            )
        }
    };
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{path} accepts GET only"),
        );
    }
    match endpoint {
        Some(endpoint) => upgrade(req, shard, endpoint),
        None => health(shard),
    }
}

fn health(shard: &Shard) -> Response<Body> {
    let shared = &shard.shared;
    let body = format!(
        r#"{{"status":"ok","shards":{},"connections":{},"max_connections":{}}}"#,
        shared.config.shards,
        shared.connections.load(Ordering::Relaxed),
        shared.budget.max_connections
    );
    json(StatusCode::OK, body)
}

fn upgrade(mut req: Request<Incoming>, shard: &Rc<Shard>, endpoint: Endpoint) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        let text = "this endpoint is a WebSocket: send Connection: Upgrade and Upgrade: websocket";
        return error(StatusCode::UPGRADE_REQUIRED, "upgrade_required", text);
    }
    if let Err(text) = check_handshake(&req) {
        return error(StatusCode::BAD_REQUEST, "bad_handshake", text);
    }
    let protocol = match (endpoint, negotiate(&req)) {
        (Endpoint::Echo, _) => None,
        (Endpoint::Protocol, Ok(protocol)) => protocol,
        (Endpoint::Protocol, Err(asked)) => {
            let text = format!(
                "unsupported subprotocol {asked:?}; supported: {SUBPROTOCOL}, {SUBPROTOCOL_LZ4}"
            );
            return error(StatusCode::BAD_REQUEST, "unsupported_subprotocol", &text);
        }
    };
    let Some(slot) = Slot::acquire(&shard.shared) else {
        let text = format!(
            "server is at max_connections ({})",
            shard.shared.budget.max_connections
        );
        return error(StatusCode::SERVICE_UNAVAILABLE, "at_capacity", &text);
    };
    // fastwebsockets checks the handshake and computes Sec-WebSocket-Accept; the upgraded socket
    // is taken from hyper directly, since its `UpgradeFut` would allocate a read buffer that
    // wsedge's own decoder does not use.
    let on_upgrade = hyper::upgrade::on(&mut req);
    let response = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((response, _)) => response,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_handshake", &e.to_string()),
    };
    let lz4 = protocol == Some(SUBPROTOCOL_LZ4);
    let shard = shard.clone();
    tokio::task::spawn_local(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!("upgrade failed: {e}"),
        };
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => parts,
            Err(_) => return tracing::error!("upgraded connection is not a TcpStream"),
        };
        let conn = Rc::new(Conn::new(
            shard.next_conn_id(),
            lz4,
            shard.config().outbox_max_bytes,
        ));
        shard.conns.borrow_mut().insert(conn.id, conn.clone());
        if endpoint == Endpoint::Protocol {
            conn.send(
                Priority::Critical,
                reply::welcome(&connection_name(conn.id), shard.index),
            );
        }
        if shard.closing.get() {
            conn.close(
                Some((1001, "server shutting down")),
                connection::CloseKind::Graceful,
                None,
            );
        }
        connection::run(shard, conn, parts.io.into_inner(), parts.read_buf, endpoint).await;
        drop(slot);
    });
    let (mut parts, _) = response.into_parts();
    if let Some(protocol) = protocol {
        parts
            .headers
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    Response::from_parts(parts, Body::default())
}

/// RFC 6455 §4.2.1 checks that fastwebsockets leaves out.
fn check_handshake<B>(req: &Request<B>) -> Result<(), &'static str> {
    if req.version() < Version::HTTP_11 {
        return Err("a WebSocket upgrade needs HTTP/1.1 or later");
    }
    if !req.headers().contains_key(HOST) {
        return Err("missing Host header");
    }
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes);
    if !key.is_some_and(is_websocket_key) {
        return Err("Sec-WebSocket-Key must be 16 bytes in base64 (24 characters)");
    }
    Ok(())
}

/// Whether `key` is base64 for 16 bytes: 22 base64 digits, then `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The client-visible connection id: `<shard>-<sequence>`.
pub fn connection_name(id: u64) -> String {
    format!("{}-{}", id >> 48, id & ((1 << 48) - 1))
}

/// The subprotocol to answer with: the client's first supported choice, or none when it asked
/// for none (protocol v1 is the default). `Err` carries what it asked when nothing is supported.
fn negotiate<B>(req: &Request<B>) -> Result<Option<&'static str>, String> {
    let mut asked = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    if asked.peek().is_none() {
        return Ok(None);
    }
    let mut seen = Vec::new();
    for p in asked {
        match p {
            SUBPROTOCOL => return Ok(Some(SUBPROTOCOL)),
            SUBPROTOCOL_LZ4 => return Ok(Some(SUBPROTOCOL_LZ4)),
            other => seen.push(other.to_string()),
        }
    }
    Err(seen.join(", "))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut body = format!(r#"{{"error":"{code}","message":"#).into_bytes();
    write_json_string(&mut body, message);
    body.push(b'}');
    json(status, body)
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_at_capacity_response_has_the_length_it_announces() {
        let text = std::str::from_utf8(AT_CAPACITY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length = format!("content-length: {}\r\n", body.len());
        assert!(format!("{head}\r\n").contains(&length), "{head}");
        assert!(head.starts_with("HTTP/1.1 503 "));
    }

    #[test]
    fn a_websocket_key_is_16_bytes_of_base64() {
        assert!(is_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_websocket_key(b"AAAAAAAAAAAAAAAAAAAA+/=="));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZQ=x",
            b"dGhlIHNhbXBsZSBub25j!Q==",
        ] {
            assert!(!is_websocket_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
