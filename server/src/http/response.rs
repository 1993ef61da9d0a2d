//! The HTTP answers wsedge gives: JSON errors `{"error":..., "message":...}` with a status, and
//! the static refusals written at accept, before hyper sees the connection.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use wsedge_core::protocol::reply::write_json_string;

use crate::per_ip::Refusal;

pub type Body = Full<Bytes>;

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

pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut body = format!(r#"{{"error":"{code}","message":"#).into_bytes();
    write_json_string(&mut body, message);
    body.push(b'}');
    json(status, body)
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
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
}
