//! Protocol v1 requests on `/ws`: each request is parsed, checked, handed to the shard's broker,
//! and answered.
//! Replies (ok, pong, error) go in the critical lane; echo goes in the normal lane, the path every
//! message takes.

use std::sync::Arc;
use std::time::Instant;

use simd_json::prelude::Writable;
use wsedge_core::broker::{
    GroupKey, HistoryQuery, InboxMessage, Origin, Refusal, SchedulePublish, Sequence, Settle,
};
use wsedge_core::ids::ConnId;
use wsedge_core::limits::{ConnLimits, Verdict};
use wsedge_core::message::Published;
use wsedge_core::protocol::decoder::Message;
use wsedge_core::protocol::envelope::{self, ErrorCode, Json, Op, Position, Schedule, SettleOp};
use wsedge_core::protocol::{reply, Priority};

use super::op_index::op_index;
use super::refuse::{close_rate_limited, refuse_rate_limited};
use super::Shard;
use crate::conn::{unix_ms, Conn};
use crate::metrics;

/// Handles one text message; `limits` and `now` decide whether a publish may go out.
pub fn handle_text(
    shard: &Shard,
    conn: &Conn,
    mut message: Message,
    limits: &mut ConnLimits,
    now: Instant,
) {
    handle_request(shard, conn, message.payload_mut(), limits, now);
}

/// Handles one request's JSON text (parsed in place): from a WebSocket message, or from the
/// server API on its own connection.
pub fn handle_request(
    shard: &Shard,
    conn: &Conn,
    payload: &mut [u8],
    limits: &mut ConnLimits,
    now: Instant,
) {
    let size = payload.len();
    let parsed = envelope::parse(
        payload,
        &mut shard.json_buffers(),
        shard.config().max_json_depth,
    );
    let request = match parsed {
        Ok(request) => request,
        Err(rejection) => {
            shard.metrics().received[metrics::op_index("invalid")].inc();
            let frame = shard.error(
                rejection.reference.as_ref(),
                rejection.code,
                &rejection.message,
            );
            return conn.send(Priority::Critical, frame);
        }
    };
    shard.metrics().received[op_index(&request.op)].inc();
    if let Op::Publish { channel, .. } = &request.op {
        shard.count_channel(channel);
    }
    let reference = request.reference.as_ref();
    let outcome = match request.op {
        Op::Subscribe {
            channel,
            group: Some(group),
            balance,
            ack,
            durable,
            ..
        } => {
            let key = group_key(&channel, &group);
            let balance = balance.unwrap_or(shard.config().default_balance);
            let encoded = reference.map(|r| r.encode());
            let token = shard.pending(conn.id(), encoded);
            let load = conn.load().clone();
            let joined = shard.broker(|broker, out| {
                let ack = ack.then_some(durable);
                broker.join_group(conn.id(), key, balance, &load, token, ack, unix_ms(), out)
            });
            match joined {
                // The `ok` comes when the group's home has the member.
                Ok(()) => return,
                Err(refusal) => {
                    shard.cancel_pending(token);
                    Err(refused(refusal))
                }
            }
        }
        Op::Subscribe {
            channel, ack: true, ..
        } => shard
            .broker(|broker, out| broker.subscribe_acked(conn.id(), &channel, unix_ms(), out))
            .map_err(refused),
        Op::Subscribe {
            channel,
            presence,
            since,
            ..
        } => {
            let history = shard.broker(|broker, _| broker.history_enabled());
            if !history || wsedge_core::topic::is_pattern(&channel) {
                if since.is_some() {
                    return conn.send(Priority::Critical, history_off(shard, reference));
                }
                shard
                    .broker(|broker, out| broker.subscribe(conn.id(), &channel, presence, out))
                    .map_err(refused)
            } else {
                // The `ok`, with the position, comes from the channel's home.
                let subscribe = Some((conn.id(), presence));
                match ask_history(
                    shard,
                    conn,
                    reference,
                    &channel,
                    since,
                    usize::MAX,
                    subscribe,
                ) {
                    Ok(()) => return,
                    refused => refused,
                }
            }
        }
        Op::History {
            channel,
            since,
            limit,
        } => {
            if !shard.broker(|broker, _| broker.history_enabled()) {
                return conn.send(Priority::Critical, history_off(shard, reference));
            }
            // The answer comes from the channel's home.
            match ask_history(shard, conn, reference, &channel, since, limit, None) {
                Ok(()) => return,
                refused => refused,
            }
        }
        Op::Presence { channel } => {
            let token = shard.pending(conn.id(), reference.map(|r| r.encode()));
            // The answer comes from the channel's presence home.
            return shard.broker(|broker, out| broker.query_presence(&channel, token, out));
        }
        Op::Unsubscribe {
            channel,
            group: Some(group),
        } => {
            let key = group_key(&channel, &group);
            shard
                .broker(|broker, out| broker.leave_group(conn.id(), key, unix_ms(), out))
                .map_err(refused)
        }
        Op::Unsubscribe { channel, .. } => unsubscribe(shard, conn, &channel),
        Op::Publish {
            channel,
            data,
            priority,
            schedule: Some(schedule),
            ..
        } => {
            let not_before = match scheduled_at(shard, conn, Some(schedule)) {
                Ok(at) => at,
                Err((code, text)) => {
                    return conn.send(Priority::Critical, shard.error(reference, code, &text))
                }
            };
            let Some((data, origin)) =
                admit_home(shard, conn, reference, &channel, &data, limits, now)
            else {
                return;
            };
            let request = SchedulePublish {
                channel: (*channel).into(),
                id: shard.next_message_id().into(),
                priority,
                data,
                not_before,
                from: conn.user().cloned(),
                origin,
            };
            // Stored at the channel's home, which answers with the schedule's id.
            return shard.broker(|broker, out| broker.schedule_publish(request, unix_ms(), out));
        }
        Op::Publish { persist: true, .. } if shard.broker(|b, _| b.history_enabled()) => {
            let text = "\"persist\" on publish is not available while [history] is on";
            Err((ErrorCode::InvalidField, text.to_string()))
        }
        Op::Publish {
            channel,
            data,
            priority,
            persist: false,
            msg_id,
            ..
        } if msg_id.is_some() || shard.broker(|broker, _| broker.history_enabled()) => {
            let Some((data, origin)) =
                admit_home(shard, conn, reference, &channel, &data, limits, now)
            else {
                return;
            };
            let message = Sequence {
                channel: (*channel).into(),
                id: shard.next_message_id().into(),
                priority,
                data,
                msg_id: msg_id.map(|m| (*m).into()),
                origin,
                born_us: metrics::now_us(),
            };
            // Checked (msg_id) and numbered (history) at the channel's home, which answers.
            return shard.broker(|broker, out| broker.publish_sequenced(message, unix_ms(), out));
        }
        Op::Publish {
            channel,
            data,
            priority,
            persist,
            msg_id,
            schedule: None,
        } => {
            let allowed = shard.broker(|broker, _| broker.check_publish(conn.id(), &channel));
            let build = |id: &str, lz4_threshold| {
                let frame = reply::message(&channel, id, priority, &data, size);
                let mut message = Published::new(&channel, priority, frame, lz4_threshold);
                message.msg_id = msg_id.as_deref().map(Into::into);
                message.born_us = metrics::now_us();
                message
            };
            let Some((message, _)) = admit(shard, conn, reference, allowed, limits, now, build)
            else {
                return;
            };
            if persist {
                let encoded = reference.map(|r| r.encode());
                match shard.publish_persisted(conn.id(), message, encoded) {
                    // Answered once every durable group of the channel has stored it.
                    Ok(()) => return,
                    Err(full) => Err(overloaded(full)),
                }
            } else {
                match shard.forward(&message) {
                    Ok(()) => {
                        shard.deliver_local(&message);
                        Ok(())
                    }
                    Err(full) => Err(overloaded(full)),
                }
            }
        }
        Op::Settle { id, how } => {
            let settle = match how {
                SettleOp::Ack => Settle::Ack,
                SettleOp::Nak { delay_ms } => Settle::Nak { delay_ms },
                SettleOp::Term { reason } => Settle::Term {
                    reason: reason.map(|r| (*r).into()),
                },
            };
            let token = shard.pending(conn.id(), reference.map(|r| r.encode()));
            let origin = Origin {
                shard: shard.index(),
                token,
            };
            // Answered by the home of the connection's user.
            return shard.broker(|broker, out| {
                broker.settle(conn.id(), &id, settle, origin, unix_ms(), out)
            });
        }
        Op::Cancel { id } => {
            let token = shard.pending(conn.id(), reference.map(|r| r.encode()));
            let origin = Origin {
                shard: shard.index(),
                token,
            };
            // Answered by the home of the recipient the id names.
            return shard
                .broker(|broker, out| broker.cancel(conn.id(), &id, origin, unix_ms(), out));
        }
        Op::Ping => return conn.send(Priority::Critical, reply::pong(reference)),
        Op::Echo { data } => {
            return conn.send(Priority::Normal, reply::echo(&data, reference, size))
        }
        Op::Refresh { token } => refresh(shard, conn, &token),
        Op::Send {
            user,
            data,
            priority,
            ack,
            persist,
            msg_id,
            schedule,
        } => {
            let not_before = match scheduled_at(shard, conn, schedule) {
                Ok(at) => at,
                Err((code, text)) => {
                    return conn.send(Priority::Critical, shard.error(reference, code, &text))
                }
            };
            let allowed = shard.broker(|broker, _| broker.check_send(conn.id(), &user));
            let from = conn.user().map(|u| &**u);
            // A scheduled message's id names its recipient, so that `cancel` finds its inbox.
            let message_id = |id: &str| match not_before {
                0 => id.to_string(),
                _ => format!("{id}:{user}"),
            };
            let build = |id: &str, lz4_threshold| {
                let id = message_id(id);
                let frame = reply::direct(&user, from, &id, priority, ack, &data, size);
                // Routed by user, never by channel.
                let mut message = Published::new("", priority, frame, lz4_threshold);
                message.born_us = metrics::now_us();
                message
            };
            let Some((message, id)) = admit(shard, conn, reference, allowed, limits, now, build)
            else {
                return;
            };
            let encoded = reference.map(|r| r.encode());
            if ack {
                let token = shard.pending(conn.id(), encoded);
                let put = InboxMessage {
                    user: (*user).into(),
                    id: message_id(&id).into(),
                    frame: message.frame.clone(),
                    priority,
                    persist,
                    msg_id: msg_id.map(|m| (*m).into()),
                    origin: Some(Origin {
                        shard: shard.index(),
                        token,
                    }),
                    not_before,
                    from: conn.user().cloned(),
                };
                // Answered by the user's home (after the store, when persisted).
                return shard.broker(|broker, out| broker.send_to_inbox(put, unix_ms(), out));
            }
            match shard.send_direct(conn.id(), &user, message, encoded) {
                // The answer, with the count, comes from `send_direct`.
                Ok(()) => return,
                Err(full) => Err(overloaded(full)),
            }
        }
    };
    match (outcome, reference) {
        (Ok(()), Some(reference)) => conn.send(Priority::Critical, reply::ok(reference)),
        (Ok(()), None) => {}
        (Err((code, text)), reference) => {
            conn.send(Priority::Critical, shard.error(reference, code, &text))
        }
    }
}

/// The `data` of a publish that goes to its channel's home first (numbered, checked or
/// scheduled there), and the origin its answer comes back to; `None` when refused (and
/// answered).
#[allow(clippy::too_many_arguments)]
fn admit_home(
    shard: &Shard,
    conn: &Conn,
    reference: Option<&Json<'_>>,
    channel: &str,
    data: &Json<'_>,
    limits: &mut ConnLimits,
    now: Instant,
) -> Option<(bytes::Bytes, Origin)> {
    let allowed = shard.broker(|broker, _| broker.check_publish(conn.id(), channel));
    let data = bytes::Bytes::from(data.encode());
    let cost = data.len() + channel.len() + 128;
    if !allow(shard, conn, reference, allowed, limits, now, cost) {
        return None;
    }
    let token = shard.pending(conn.id(), reference.map(|r| r.encode()));
    let origin = Origin {
        shard: shard.index(),
        token,
    };
    Some((data, origin))
}

/// A message a connection asks to publish or send, with its id, once `allowed` (its
/// permission) and its `publish_bytes_per_s` limit let it through; `None` when refused (and
/// answered). `build` makes it from its message id and the lz4 threshold.
fn admit(
    shard: &Shard,
    conn: &Conn,
    reference: Option<&Json<'_>>,
    allowed: Result<(), Refusal>,
    limits: &mut ConnLimits,
    now: Instant,
    build: impl FnOnce(&str, usize) -> Published,
) -> Option<(Arc<Published>, String)> {
    if let Err(refusal) = &allowed {
        let frame = shard.error(reference, refusal.code(), &refusal.to_string());
        conn.send(Priority::Critical, frame);
        return None;
    }
    let id = shard.next_message_id();
    let message = build(&id, shard.config().lz4_threshold);
    allow(
        shard,
        conn,
        reference,
        Ok(()),
        limits,
        now,
        message.frame.len(),
    )
    .then(|| (Arc::new(message), id))
}

/// Whether a publish or send of `bytes` may go: `allowed` (its permission) and the connection's
/// `publish_bytes_per_s` limit; when not, it is answered (or the connection closed).
fn allow(
    shard: &Shard,
    conn: &Conn,
    reference: Option<&Json<'_>>,
    allowed: Result<(), Refusal>,
    limits: &mut ConnLimits,
    now: Instant,
    bytes: usize,
) -> bool {
    if let Err(refusal) = allowed {
        let frame = shard.error(reference, refusal.code(), &refusal.to_string());
        conn.send(Priority::Critical, frame);
        return false;
    }
    match limits.publish(bytes, now) {
        Verdict::Allow => true,
        Verdict::Refuse => {
            refuse_rate_limited(shard, conn, reference, "publish_bytes_per_s");
            false
        }
        Verdict::Close => {
            close_rate_limited(conn);
            false
        }
    }
}

/// Asks `channel`'s home about its history (for a subscribe when `subscribe` holds the
/// connection and its presence flag). `Ok(())`: asked, and the answer will come from there;
/// the caller answers a refusal.
fn ask_history(
    shard: &Shard,
    conn: &Conn,
    reference: Option<&Json<'_>>,
    channel: &str,
    since: Option<Position>,
    limit: usize,
    subscribe: Option<(ConnId, bool)>,
) -> Outcome {
    let token = shard.pending(conn.id(), reference.map(|r| r.encode()));
    let query = HistoryQuery {
        channel: channel.into(),
        since,
        limit,
        subscribe,
        origin: Origin {
            shard: shard.index(),
            token,
        },
    };
    let asked = shard.broker(|broker, out| broker.ask_history(conn.id(), query, unix_ms(), out));
    asked.map_err(|refusal| {
        shard.cancel_pending(token);
        refused(refusal)
    })
}

/// Answers a `since` or `history` on a server without history.
fn history_off(shard: &Shard, reference: Option<&Json<'_>>) -> bytes::Bytes {
    let text = "this server keeps no channel history ([history] size = 0)";
    shard.error(reference, ErrorCode::HistoryOff, text)
}

/// When a send with `schedule` is due (Unix ms; 0 without one). Scheduling needs a user (only
/// the sender may cancel) and a time within `inbox.ttl_s`.
fn scheduled_at(
    shard: &Shard,
    conn: &Conn,
    schedule: Option<Schedule>,
) -> Result<u64, (ErrorCode, String)> {
    let now = unix_ms();
    let at = match schedule {
        None => return Ok(0),
        Some(Schedule::At(at)) => at.max(now),
        Some(Schedule::Delay(delay)) => now.saturating_add(delay),
    };
    if conn.user().is_none() && !conn.is_api() {
        let text = "scheduling needs a user (a token): only the one who scheduled may cancel";
        return Err((ErrorCode::Forbidden, text.into()));
    }
    let ttl = shard.config().delivery.inbox_ttl_ms;
    if at - now >= ttl {
        let text = format!(
            "the time is {} s away, beyond inbox.ttl_s ({} s)",
            (at - now) / 1000,
            ttl / 1000
        );
        return Err((ErrorCode::InvalidField, text));
    }
    Ok(at)
}

fn overloaded(full: usize) -> (ErrorCode, String) {
    let text = format!(
        "not carried out: shard {full}'s inbound queue is full; delivered nowhere, retry later"
    );
    (ErrorCode::Overloaded, text)
}

type Outcome = Result<(), (ErrorCode, String)>;

/// Shortest time between two `refresh` requests of one connection.
const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn unsubscribe(shard: &Shard, conn: &Conn, channel: &str) -> Outcome {
    shard
        .broker(|broker, out| broker.unsubscribe(conn.id(), channel, out))
        .map_err(refused)
}

fn group_key(channel: &str, group: &str) -> GroupKey {
    GroupKey {
        channel: channel.into(),
        group: group.into(),
    }
}

fn refused(refusal: Refusal) -> (ErrorCode, String) {
    (refusal.code(), refusal.to_string())
}

/// Replaces the connection's token: same user, a later expiry, the new token's permissions. At
/// most one per [`REFRESH_INTERVAL`]: checking a signature costs far more than any other
/// request (tens of microseconds for RS256), so a flood of refreshes is refused cheaply.
fn refresh(shard: &Shard, conn: &Conn, token: &str) -> Outcome {
    if !conn.may_refresh(REFRESH_INTERVAL) {
        let text = "at most one refresh per second; request not carried out";
        return Err((ErrorCode::RateLimited, text.into()));
    }
    let invalid = |text: String| (ErrorCode::InvalidToken, text);
    let Some(verifier) = &shard.shared().verifier else {
        return Err(invalid(
            "this server has no key to check tokens ([auth])".into(),
        ));
    };
    let claims = verifier
        .verify(token, crate::conn::unix_now())
        .map_err(|e| invalid(e.to_string()))?;
    match conn.user() {
        Some(user) if **user == *claims.user => {}
        Some(user) => {
            return Err(invalid(format!(
                "the token is for user {:?}; this connection is {user:?}",
                claims.user
            )))
        }
        None => {
            return Err(invalid(
                "an anonymous connection cannot take a token: reconnect with it".into(),
            ))
        }
    }
    let permissions = claims
        .permissions
        .unwrap_or_else(|| shard.config().auth.permissions.clone());
    shard.broker(|broker, _| broker.refresh(conn.id(), permissions));
    conn.set_expiry(claims.expires_at);
    Ok(())
}
