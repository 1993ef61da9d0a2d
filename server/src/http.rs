//! HTTP on the WebSocket port, through hyper: `GET /ws` and `GET /echo` upgrade, `GET /health`
//! reports, anything else is 404. Errors are JSON `{"error":..., "message":...}` with a status.
//!
//! Upgrades follow RFC 6455 §4.2.1 strictly: HTTP/1.1 or later, a `Host` header, and a
//! `Sec-WebSocket-Key` that decodes to 16 bytes, else 400. A request head over
//! `server.max_request_bytes` gets 431 from hyper.

use std::cell::Cell;
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
use tokio_rustls::server::TlsStream;

use crate::connection::{self, Conn, Endpoint};
use crate::per_ip::{IpGuard, Refusal};
use crate::protocol::reply::{self, write_json_string};
use crate::protocol::Priority;
use crate::shard::{Pending, Shard, Slot};
use crate::transport::Stream;

/// Subprotocol for plain JSON text frames (the default).
pub const SUBPROTOCOL: &str = "wsedge.v1";
/// Subprotocol whose large messages arrive lz4-compressed in binary frames.
pub const SUBPROTOCOL_LZ4: &str = "wsedge.v1.lz4";

type Body = Full<Bytes>;

/// Serves one accepted TCP connection: its TLS handshake when `[tls]` is set, then its HTTP
/// requests until it upgrades, closes, or runs out of `handshake_timeout` (for both together).
/// `pending` counts it against `server.handshake_budget_bytes` meanwhile; `ip` counts it for its
/// address for as long as the socket lives (it passes to the WebSocket connection).
pub async fn serve(stream: TcpStream, shard: Rc<Shard>, pending: Pending, ip: IpGuard) {
    let phase = Phase {
        deadline: tokio::time::Instant::now() + shard.config().handshake_timeout,
        pending,
        ip: Rc::new(Cell::new(Some(ip))),
    };
    match shard.shared.tls.clone() {
        None => serve_http(stream, shard, phase).await,
        // Boxed: a TLS session is large, and a plain connection's task need not hold room for it
        // (measured: 3.5 KB of RSS per idle plain connection boxed, 8 KB not).
        Some(tls) => Box::pin(serve_tls(stream, shard, phase, tls)).await,
    }
}

async fn serve_tls(
    stream: TcpStream,
    shard: Rc<Shard>,
    phase: Phase,
    tls: std::sync::Arc<rustls::ServerConfig>,
) {
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout_at(phase.deadline, accept).await {
        Ok(Ok(stream)) => serve_http(stream, shard, phase).await,
        Ok(Err(e)) => tracing::debug!("tls handshake: {e}"),
        Err(_) => tracing::debug!("tls handshake: handshake_timeout passed"),
    }
}

/// What a connection holds while in the HTTP phase.
struct Phase {
    deadline: tokio::time::Instant,
    pending: Pending,
    /// Taken by the upgrade, which keeps it for the WebSocket's life.
    ip: Rc<Cell<Option<IpGuard>>>,
}

async fn serve_http<S>(stream: S, shard: Rc<Shard>, phase: Phase)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let max_request_bytes = shard.config().max_request_bytes;
    let ip = phase.ip.clone();
    let service = hyper::service::service_fn(move |req| {
        let response = route(req, &shard, &ip);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(max_request_bytes)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    match tokio::time::timeout_at(phase.deadline, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("http: {e}"),
        Err(_) => tracing::debug!("http: handshake_timeout passed"),
    }
    drop(phase.pending);
}

/// What a connection refused by a per-address limit is told before it is closed.
pub fn per_ip_response(refusal: Refusal) -> &'static [u8] {
    match refusal {
        Refusal::TooMany => b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 101\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"server.max_connections_per_ip are open from your address\"}",
        Refusal::TooFast => b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 107\r\n\r\n\
{\"error\":\"too_many_new_connections\",\"message\":\"over server.new_connections_per_ip_per_s from your address\"}",
    }
}

/// What a refused TCP connection is told before it is closed (see `server.max_connections`
/// and `server.handshake_budget_bytes`); it fits any socket's send buffer, so one non-blocking
/// write sends it.
pub const AT_CAPACITY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 69\r\n\r\n\
{\"error\":\"at_capacity\",\"message\":\"server is at its connection limit\"}";

fn route(req: Request<Incoming>, shard: &Rc<Shard>, ip: &Cell<Option<IpGuard>>) -> Response<Body> {
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
        Some(endpoint) => upgrade(req, shard, endpoint, ip),
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

fn upgrade(
    mut req: Request<Incoming>,
    shard: &Rc<Shard>,
    endpoint: Endpoint,
    ip: &Cell<Option<IpGuard>>,
) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        let text = "this endpoint is a WebSocket: send Connection: Upgrade and Upgrade: websocket";
        return error(StatusCode::UPGRADE_REQUIRED, "upgrade_required", text);
    }
    if let Err(text) = check_handshake(&req) {
        return error(StatusCode::BAD_REQUEST, "bad_handshake", text);
    }
    if let Err(text) = check_origin(&req, &shard.config().allowed_origins) {
        return error(StatusCode::FORBIDDEN, "origin_not_allowed", &text);
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
    let ip = ip.take();
    tokio::task::spawn_local(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!("upgrade failed: {e}"),
        };
        let Some((stream, prefix)) = into_stream(upgraded) else {
            return tracing::error!("upgraded connection is neither TCP nor TLS over TCP");
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
        connection::run(shard, conn, stream, prefix, endpoint).await;
        drop((slot, ip));
    });
    let (mut parts, _) = response.into_parts();
    if let Some(protocol) = protocol {
        parts
            .headers
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    Response::from_parts(parts, Body::default())
}

/// The upgraded connection's stream and the bytes hyper read past the request.
fn into_stream(upgraded: hyper::upgrade::Upgraded) -> Option<(Stream, Bytes)> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Some((Stream::Plain(parts.io.into_inner()), parts.read_buf)),
        Err(upgraded) => upgraded,
    };
    let parts = upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>().ok()?;
    let (tcp, session) = parts.io.into_inner().into_inner();
    Some((Stream::tls(tcp, session), parts.read_buf))
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

/// `server.allowed_origins`: a browser's `Origin` must be one of them (when there are any);
/// requests without an `Origin` header come from agents, not browsers, and pass.
fn check_origin<B>(req: &Request<B>, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = req.headers().get(hyper::header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
    if allowed.is_empty() || allowed.contains(&origin) {
        return Ok(());
    }
    Err(format!(
        "origin {origin:?} is not in server.allowed_origins"
    ))
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
    fn the_static_responses_have_the_length_they_announce() {
        for (response, status) in [
            (AT_CAPACITY_RESPONSE, "503"),
            (per_ip_response(Refusal::TooMany), "429"),
            (per_ip_response(Refusal::TooFast), "429"),
        ] {
            let text = std::str::from_utf8(response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length = format!("content-length: {}\r\n", body.len());
            assert!(format!("{head}\r\n").contains(&length), "{head}");
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")));
            assert!(body.starts_with("{\"error\":\"") && body.ends_with("\"}"));
        }
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
