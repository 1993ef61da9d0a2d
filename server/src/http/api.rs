//! The HTTP server API under `/api/`, authenticated with `Authorization: Bearer <key>` from
//! `[api] keys`. Today it serves the dead-letter queue and durable groups:
//!
//! - `GET /api/dlq?destination=user:<id>&after=<id>&limit=<n>`: dead letters, oldest first.
//! - `POST /api/dlq/{id}/replay`: puts the message back in its user's inbox or its group's
//!   queue (stored and synced first, unless the group is not durable), then deletes the dead
//!   letter. A plain subscription's dead letters cannot be replayed: its subscriber is gone.
//! - `DELETE /api/dlq/{id}`: deletes it.
//! - `DELETE /api/groups?channel=C&group=G`: durable group `G` on `C` stops being durable; what
//!   it holds is forgotten.
//!
//! Errors are JSON `{"error":code,"message":...}`: 400 (a bad parameter), 401 (no valid key),
//! 404 (no such route or dead letter), 405, 409 (the inbox is full, or the group takes no
//! messages), 503 (the store failed or did not answer in time).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::oneshot;
use wsedge_core::broker::{
    group_queue, queue_group, Answer, DeadLetter, GroupKey, InboxMessage, Origin, Refusal,
};
use wsedge_core::protocol::frame;
use wsedge_core::protocol::reply::write_json_string;

use super::response::{error, json, Body};
use crate::conn::unix_ms;
use crate::shard::Shard;
use crate::store::DeadLetters as Query;

/// Dead letters one list answer holds at most (and by default).
pub const MAX_LIST: usize = 1000;
const DEFAULT_LIST: usize = 100;
/// How long a request waits for the store or the inbox's home shard.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one `/api/...` request.
pub async fn handle<B>(req: Request<B>, shard: &Rc<Shard>) -> Response<Body> {
    if let Some(refused) = authorize(&req, shard) {
        return refused;
    }
    let path = req.uri().path().trim_start_matches("/api/");
    let segments: Vec<&str> = path.split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["dlq"]) => list(shard, req.uri().query().unwrap_or("")).await,
        (&Method::POST, ["dlq", id, "replay"]) => match dead_id(id) {
            Ok(id) => replay(shard, id).await,
            Err(bad) => *bad,
        },
        (&Method::DELETE, ["dlq", id]) => match dead_id(id) {
            Ok(id) => delete(shard, id).await,
            Err(bad) => *bad,
        },
        (&Method::DELETE, ["groups"]) => delete_group(shard, req.uri().query().unwrap_or("")).await,
        (_, ["groups"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "DELETE /api/groups?channel=C&group=G",
        ),
        (_, ["dlq"] | ["dlq", _] | ["dlq", _, "replay"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET /api/dlq, POST /api/dlq/{id}/replay, DELETE /api/dlq/{id}",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no API route for {}", req.uri().path()),
        ),
    }
}

/// `None` when the request carries one of `api.keys`; else the 401.
fn authorize<B>(req: &Request<B>, shard: &Shard) -> Option<Response<Body>> {
    let keys = &shard.config().api_keys;
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

/// A refusal answered as it is (boxed: a response is large).
type Refused = Box<Response<Body>>;

fn dead_id(text: &str) -> Result<u64, Refused> {
    text.parse().map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            "a dead letter's id is a positive integer",
        ))
    })
}

/// Asks the store, waiting at most [`ANSWER_TIMEOUT`].
async fn ask<T>(
    shard: &Shard,
    query: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Query,
) -> Result<T, Refused> {
    let (tx, rx) = oneshot::channel();
    shard.shared().store.query(query(tx));
    let unavailable =
        |text: &str| error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", text);
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(e))) => Err(Box::new(unavailable(&e))),
        _ => Err(Box::new(unavailable("the store did not answer in time"))),
    }
}

async fn list(shard: &Shard, query: &str) -> Response<Body> {
    let mut destination = None;
    let mut after = 0;
    let mut limit = DEFAULT_LIST;
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        let value = percent_decode(value);
        let bad = |text: &str| error(StatusCode::BAD_REQUEST, "invalid_parameter", text);
        match key {
            "destination" => destination = Some(value),
            "after" => match value.parse() {
                Ok(n) => after = n,
                Err(_) => return bad("after must be a dead letter's id"),
            },
            "limit" => match value.parse() {
                Ok(n) if (1..=MAX_LIST).contains(&n) => limit = n,
                _ => return bad(&format!("limit must be 1-{MAX_LIST}")),
            },
            _ => {}
        }
    }
    let found = match ask(shard, |reply| Query::List {
        destination,
        after,
        limit,
        reply,
    })
    .await
    {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let mut body = b"{\"dead_letters\":[".to_vec();
    for (i, (id, dead)) in found.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_dead(&mut body, *id, dead);
    }
    body.extend_from_slice(b"],\"next_after\":");
    match found.last().filter(|_| found.len() == limit) {
        Some((id, _)) => body.extend_from_slice(id.to_string().as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    json(StatusCode::OK, Bytes::from(body))
}

/// One dead letter as JSON; `message` is the `{"op":"message",...}` its user would have got.
fn write_dead(out: &mut Vec<u8>, id: u64, dead: &DeadLetter) {
    out.extend_from_slice(format!("{{\"id\":{id},\"destination\":").as_bytes());
    write_json_string(out, &dead.destination);
    out.extend_from_slice(b",\"reason\":\"");
    out.extend_from_slice(dead.reason.as_str().as_bytes());
    out.extend_from_slice(b"\",\"detail\":");
    match &dead.detail {
        Some(detail) => write_json_string(out, detail),
        None => out.extend_from_slice(b"null"),
    }
    let m = &dead.message;
    out.extend_from_slice(
        format!(
            ",\"attempts\":{},\"dead_at_ms\":{},\"created_at_ms\":{},\"message_id\":",
            dead.attempts, dead.dead_ms, m.created_ms
        )
        .as_bytes(),
    );
    write_json_string(out, &m.id);
    out.extend_from_slice(b",\"message\":");
    // The payload is the server's own JSON text.
    out.extend_from_slice(&m.payload);
    out.push(b'}');
}

async fn replay(shard: &Rc<Shard>, id: u64) -> Response<Body> {
    let dead = match ask(shard, |reply| Query::Get { id, reply }).await {
        Ok(Some(dead)) => dead,
        Ok(None) => return no_dead_letter(id),
        Err(refused) => return *refused,
    };
    let user = dead.destination.strip_prefix("user:");
    let group = queue_group(&dead.destination).map(|_| &*dead.destination);
    let Some(to) = user.or(group) else {
        return error(
            StatusCode::BAD_REQUEST,
            "not_replayable",
            "only messages to a user's inbox or a group can be replayed (a plain subscription's subscriber is gone)",
        );
    };
    let mut buf = frame::payload_buffer(dead.message.payload.len());
    buf.extend_from_slice(&dead.message.payload);
    let (token, answer) = shard.pending_http();
    let put = InboxMessage {
        user: to.into(),
        id: dead.message.id.clone(),
        frame: frame::finish(buf, frame::OpCode::Text),
        priority: dead.message.priority,
        persist: true,
        msg_id: None,
        origin: Some(Origin {
            shard: shard.index(),
            token,
        }),
        not_before: 0,
        from: dead.message.from.clone(),
    };
    match user {
        Some(_) => shard.broker(|broker, out| broker.send_to_inbox(put, unix_ms(), out)),
        None => shard.broker(|broker, out| broker.send_to_queue(put, unix_ms(), out)),
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Answer::Ok | Answer::Duplicate | Answer::Scheduled(_))) => {}
        Ok(Ok(Answer::Refused(refusal))) => {
            let status = match refusal {
                Refusal::InboxFull(_) | Refusal::NoQueue(_) => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return error(status, refusal.code().as_str(), &refusal.to_string());
        }
        _ => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the inbox did not confirm in time; the dead letter is kept",
            )
        }
    }
    // In the inbox (stored): now the dead letter goes. Were this to fail, a second replay
    // would deliver the message twice, each time marked with its id.
    if let Err(refused) = ask(shard, |reply| Query::Delete { id, reply }).await {
        return *refused;
    }
    let mut body = format!("{{\"replayed\":{id},\"destination\":").into_bytes();
    write_json_string(&mut body, &dead.destination);
    body.push(b'}');
    json(StatusCode::OK, Bytes::from(body))
}

/// `DELETE /api/groups?channel=C&group=G`: durable group `G` on `C` becomes an ordinary one
/// and what it holds is forgotten (in the store too).
async fn delete_group(shard: &Rc<Shard>, query: &str) -> Response<Body> {
    let (mut channel, mut group) = (None, None);
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match key {
            "channel" => channel = Some(percent_decode(value)),
            "group" => group = Some(percent_decode(value)),
            _ => {}
        }
    }
    let bad = |text: &str| error(StatusCode::BAD_REQUEST, "invalid_parameter", text);
    let (Some(channel), Some(group)) = (channel, group) else {
        return bad("give channel and group");
    };
    if wsedge_core::topic::check_pattern(&channel).is_err() {
        return bad("channel is not a channel name or pattern");
    }
    if !wsedge_core::protocol::is_valid_group(&group) {
        return bad("group is not 1-64 bytes of [A-Za-z0-9_:-]");
    }
    let key = GroupKey {
        channel: channel.into(),
        group: group.into(),
    };
    let queue = group_queue(&key);
    let (token, answer) = shard.pending_http();
    let origin = Origin {
        shard: shard.index(),
        token,
    };
    shard.broker(|broker, out| broker.delete_durable(key, origin, unix_ms(), out));
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Answer::Ok)) => {
            let mut body = b"{\"deleted\":".to_vec();
            write_json_string(&mut body, &queue);
            body.push(b'}');
            json(StatusCode::OK, Bytes::from(body))
        }
        Ok(Ok(Answer::Refused(refusal @ Refusal::NotDurable(_)))) => {
            error(StatusCode::NOT_FOUND, "not_found", &refusal.to_string())
        }
        Ok(Ok(Answer::Refused(refusal))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            refusal.code().as_str(),
            &refusal.to_string(),
        ),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the group's home shard did not answer in time",
        ),
    }
}

async fn delete(shard: &Shard, id: u64) -> Response<Body> {
    match ask(shard, |reply| Query::Delete { id, reply }).await {
        Ok(true) => json(StatusCode::OK, format!("{{\"deleted\":{id}}}")),
        Ok(false) => no_dead_letter(id),
        Err(refused) => *refused,
    }
}

fn no_dead_letter(id: u64) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no dead letter {id}"),
    )
}

/// `%XX` escapes and `+` decoded; invalid escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("user%3Abob+x"), "user:bob x");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
