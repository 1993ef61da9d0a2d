//! Administration: durable groups made ordinary, a user's connections closed, and (for tests)
//! fault injection.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use simd_json::prelude::*;
use simd_json::OwnedValue;
use tokio::sync::oneshot;
use wsedge_core::broker::{group_queue, Answer, GroupKey, Origin, Refusal};
use wsedge_core::protocol::reply::write_json_string;

use super::common::{bad_request, percent_decode, ANSWER_TIMEOUT};
use crate::conn::unix_ms;
use crate::http::response::{error, json, Body};
use crate::shard::mailbox::{Disconnect, Inbound};
use crate::shard::Shard;

/// `DELETE /api/groups?channel=C&group=G`: durable group `G` on `C` becomes an ordinary one
/// and what it holds is forgotten (in the store too).
pub(super) async fn delete_group(shard: &Rc<Shard>, query: &str) -> Response<Body> {
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

/// Most a stall may last.
const MAX_STALL_MS: u64 = 30_000;

/// `POST /api/disconnect` with `{"user":U, "code":C, "reason":R}`: closes every connection of
/// user `U`, on every shard, with close code `C` (default 4000; 1000 or 3000-4999) and reason
/// `R` (at most 120 bytes); answers how many it closed.
pub(super) async fn disconnect(shard: &Shard, body: OwnedValue) -> Response<Body> {
    let Some(user) = body.get_str("user").filter(|u| !u.is_empty()) else {
        return bad_request(
            "missing_field",
            "give \"user\": the user whose connections to close",
        );
    };
    let code = match body.get("code") {
        None => 4000,
        Some(code) => match code.as_u64() {
            Some(c @ (1000 | 3000..=4999)) => c as u16,
            _ => return bad_request("invalid_field", "\"code\" is 1000 or 3000-4999"),
        },
    };
    let reason = match body.get("reason") {
        None => "disconnected by the server",
        Some(reason) => match reason.as_str() {
            Some(r) if r.len() <= 120 => r,
            _ => {
                return bad_request(
                    "invalid_field",
                    "\"reason\" is a string of at most 120 bytes",
                )
            }
        },
    };
    let user: Arc<str> = user.into();
    let mut answers = Vec::new();
    for mailbox in shard.shared().mailboxes.iter() {
        let (reply, answer) = oneshot::channel();
        mailbox.push_control(Inbound::Disconnect(Box::new(Disconnect {
            user: user.clone(),
            code,
            reason: reason.into(),
            reply,
        })));
        answers.push(answer);
    }
    let mut closed = 0;
    for answer in answers {
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok(count)) => closed += count,
            _ => {
                let text = "a shard did not answer in time; some connections may stay open";
                return error(StatusCode::SERVICE_UNAVAILABLE, "timeout", text);
            }
        }
    }
    let mut answer = b"{\"user\":".to_vec();
    write_json_string(&mut answer, &user);
    answer.extend_from_slice(format!(",\"closed\":{closed},\"code\":{code}}}").as_bytes());
    json(StatusCode::OK, Bytes::from(answer))
}

/// `POST /api/debug/stall?target=shard:N|store&ms=M`: blocks that thread for `M` ms (at most
/// 30 s). Only with `[api] fault_injection = true`; else 404.
pub(super) fn stall(shard: &Shard, query: &str) -> Response<Body> {
    if !shard.config().api.fault_injection {
        let text = "fault injection is off ([api] fault_injection)";
        return error(StatusCode::NOT_FOUND, "not_found", text);
    }
    let (mut target, mut ms) = (None, None);
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match key {
            "target" => target = Some(percent_decode(value)),
            "ms" => ms = value.parse::<u64>().ok().filter(|&ms| ms <= MAX_STALL_MS),
            _ => {}
        }
    }
    let Some(ms) = ms else {
        return bad_request("invalid_parameter", "ms is 0-30000");
    };
    let shards = shard.shared().mailboxes.len();
    match target.as_deref() {
        Some("store") => shard.shared().store.stall(ms),
        Some(t) => match t
            .strip_prefix("shard:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n < shards => {
                shard.shared().mailboxes[n].push_control(Inbound::Stall { ms });
            }
            _ => return bad_request("invalid_parameter", "target is store or shard:N"),
        },
        None => return bad_request("invalid_parameter", "target is store or shard:N"),
    }
    json(StatusCode::ACCEPTED, format!("{{\"stalled_ms\":{ms}}}"))
}

/// `GET /api/stats?after=<unix ms>`: the figures of each second after `after` (default: the
/// last five minutes), and the alert rules' states.
pub(super) fn stats(shard: &Shard, query: &str) -> Response<Body> {
    let mut after = 0;
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if key == "after" {
            match value.parse() {
                Ok(ms) => after = ms,
                Err(_) => return bad_request("invalid_parameter", "after is Unix ms"),
            }
        }
    }
    let shared = shard.shared();
    let body = format!(
        "{{\"shards\":{},\"max_connections\":{},\"points\":{},\"alerts\":{}}}",
        shared.config.shards,
        shared.budget.max_connections,
        shared.board.points_after(after),
        alerts_json(shard)
    );
    json(StatusCode::OK, body)
}

/// `GET /api/alerts`: every rule's state.
pub(super) fn alerts(shard: &Shard) -> Response<Body> {
    json(
        StatusCode::OK,
        format!("{{\"alerts\":{}}}", alerts_json(shard)),
    )
}

fn alerts_json(shard: &Shard) -> String {
    let statuses = shard.shared().board.statuses();
    let all: Vec<String> = statuses.iter().map(|s| s.json()).collect();
    format!("[{}]", all.join(","))
}
