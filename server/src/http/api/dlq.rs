//! The dead-letter queue: list, replay, delete.

use std::rc::Rc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use wsedge_core::broker::{queue_group, Answer, DeadLetter, InboxMessage, Origin, Refusal};
use wsedge_core::protocol::frame;
use wsedge_core::protocol::reply::write_json_string;

use super::common::{ask, percent_decode, ANSWER_TIMEOUT};
use crate::conn::unix_ms;
use crate::http::response::{error, json, Body};
use crate::shard::Shard;
use crate::store::DeadLetters as Query;

/// Dead letters one list answer holds at most (and by default).
pub const MAX_LIST: usize = 1000;
const DEFAULT_LIST: usize = 100;

pub(super) async fn list(shard: &Shard, query: &str) -> Response<Body> {
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

pub(super) async fn replay(shard: &Rc<Shard>, id: u64) -> Response<Body> {
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

pub(super) async fn delete(shard: &Shard, id: u64) -> Response<Body> {
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
