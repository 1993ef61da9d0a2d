//! HTTP on the WebSocket port, through hyper: `GET /ws` and `GET /echo` upgrade; `GET /health`
//! and `GET /metrics` report, `GET /dashboard` shows it ([`ops`]); `/client/` serves the browser
//! client ([`client`]); `/api/` is the server API ([`api`]); anything else is 404. Errors are
//! JSON `{"error":..., "message":...}` with a status.
//!
//! The upgrade itself is in [`upgrade`]. A request head over `server.max_request_bytes` gets 431
//! from hyper.

mod api;
mod auth;
mod client;
mod ops;
mod response;
mod upgrade;

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::conn::Endpoint;
use crate::metrics::rejection_index;
use crate::per_ip::IpGuard;
use crate::shard::{Pending, Shard};

pub use response::{per_ip_response, AT_CAPACITY_RESPONSE};
pub use upgrade::{SUBPROTOCOL, SUBPROTOCOL_LZ4};

use response::{error, Body};

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
    match shard.shared().tls.clone() {
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
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (shard, ip) = (shard.clone(), ip.clone());
        async move {
            let response = if req.uri().path().starts_with("/api/") {
                api::handle(req, &shard).await
            } else {
                route(req, &shard, &ip)
            };
            Ok::<_, Infallible>(response)
        }
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

fn route(req: Request<Incoming>, shard: &Rc<Shard>, ip: &Cell<Option<IpGuard>>) -> Response<Body> {
    let path = req.uri().path();
    let (endpoint, methods) = match path {
        "/ws" => (Some(Endpoint::Protocol), "GET"),
        "/echo" if shard.config().echo_endpoint => (Some(Endpoint::Echo), "GET"),
        "/health" => (None, "GET, HEAD"),
        "/metrics" | "/dashboard" => (None, "GET"),
        p if client::PATHS.contains(&p) => (None, "GET, HEAD"),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {path}; try /ws, /health, /metrics, /dashboard, /client/wsedge.js or /api/"),
            )
        }
    };
    let head = req.method() == Method::HEAD && methods.ends_with("HEAD");
    if req.method() != Method::GET && !head {
        let mut refused = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{path} accepts {methods} only"),
        );
        refused
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(methods));
        return refused;
    }
    let Some(endpoint) = endpoint else {
        return match path {
            "/metrics" => ops::metrics(shard),
            "/dashboard" => ops::dashboard(),
            "/health" => ops::health(shard),
            other => client::serve(other),
        };
    };
    let response = upgrade::upgrade(req, shard, endpoint, ip);
    let metrics = shard.metrics();
    match response.status() {
        StatusCode::SWITCHING_PROTOCOLS => metrics.upgrades.inc(),
        status => metrics.rejections[rejection_index(status.as_u16())].inc(),
    }
    response
}
