//! The WebSocket upgrade of `GET /ws` and `GET /echo`. It follows RFC 6455 §4.2.1 strictly:
//! HTTP/1.1 or later, a `Host` header, and a `Sec-WebSocket-Key` that decodes to 16 bytes, else
//! 400; then the origin (403), the token (401, see [`super::auth`]), the subprotocol (400) and a
//! connection slot (503) are checked, and
//! only then does the connection reach its shard.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use wsedge_core::protocol::{reply, Priority};

use super::response::{error, Body};
use crate::conn::transport::Stream;
use crate::conn::{session, CloseKind, CloseReason, Endpoint};
use crate::per_ip::IpGuard;
use crate::shard::{Shard, Slot};

/// Subprotocol for plain JSON text frames (the default).
pub const SUBPROTOCOL: &str = "wsedge.v1";
/// Subprotocol whose large messages arrive lz4-compressed in binary frames.
pub const SUBPROTOCOL_LZ4: &str = "wsedge.v1.lz4";

pub(super) fn upgrade(
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
    let identity = match super::auth::authenticate(&req, shard) {
        Ok(identity) => identity,
        Err(refused) => return refused.response(),
    };
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
    let Some(slot) = Slot::acquire(shard.shared()) else {
        let text = format!(
            "server is at max_connections ({})",
            shard.shared().budget.max_connections
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
        let conn = shard.open(lz4, identity);
        tracing::debug!(
            conn = %conn.id(),
            user = conn.user().map(|u| &**u),
            shard = shard.index(),
            ?endpoint,
            "connected"
        );
        if endpoint == Endpoint::Protocol {
            let name = conn.id().to_string();
            let user = conn.user().map(|user| &**user);
            conn.send(
                Priority::Critical,
                reply::welcome(&name, shard.index(), user),
            );
            shard.announce(conn.id());
        }
        if shard.is_closing() {
            conn.close(
                Some((1001, "server shutting down")),
                CloseReason::Shutdown,
                CloseKind::Graceful,
                None,
            );
        }
        session::run(shard, conn, stream, prefix, endpoint).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
