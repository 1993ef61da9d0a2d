//! Protocol v1 requests on `/ws`: each request is parsed, checked, handed to the shard's broker,
//! and answered.
//! Replies (ok, pong, error) go in the critical lane; echo goes in the normal lane, the path every
//! message takes.

use std::sync::Arc;
use std::time::Instant;

use wsedge_core::broker::Refusal;
use wsedge_core::limits::{ConnLimits, Verdict};
use wsedge_core::message::Published;
use wsedge_core::protocol::decoder::Message;
use wsedge_core::protocol::envelope::{self, ErrorCode, Json, Op};
use wsedge_core::protocol::{reply, Priority};

use super::Shard;
use crate::conn::{CloseKind, Conn};

/// Handles one text message; `limits` and `now` decide whether a publish may go out.
pub fn handle_text(
    shard: &Shard,
    conn: &Conn,
    mut message: Message,
    limits: &mut ConnLimits,
    now: Instant,
) {
    let size = message.payload().len();
    let parsed = envelope::parse(
        message.payload_mut(),
        &mut shard.json_buffers(),
        shard.config().max_json_depth,
    );
    let request = match parsed {
        Ok(request) => request,
        Err(rejection) => {
            let frame = reply::error(
                rejection.reference.as_ref(),
                rejection.code,
                &rejection.message,
            );
            return conn.send(Priority::Critical, frame);
        }
    };
    let reference = request.reference.as_ref();
    let outcome = match request.op {
        Op::Subscribe { channel } => subscribe(shard, conn, &channel),
        Op::Unsubscribe { channel } => unsubscribe(shard, conn, &channel),
        Op::Publish {
            channel,
            data,
            priority,
        } => {
            let id = shard.next_message_id();
            let frame = reply::message(&channel, &id, priority, &data, size);
            match limits.publish(frame.len(), now) {
                Verdict::Allow => {}
                Verdict::Refuse => {
                    return refuse_rate_limited(conn, reference, "publish_bytes_per_s");
                }
                Verdict::Close => return close_rate_limited(conn),
            }
            let message = Arc::new(Published::new(
                &channel,
                priority,
                frame,
                shard.config().lz4_threshold,
            ));
            match shard.forward(&message) {
                Ok(()) => {
                    shard.deliver_local(&message);
                    Ok(())
                }
                Err(full) => Err((
                    ErrorCode::Overloaded,
                    format!(
                        "not published: shard {full}'s inbound queue is full; delivered nowhere, retry later"
                    ),
                )),
            }
        }
        Op::Ping => return conn.send(Priority::Critical, reply::pong(reference)),
        Op::Echo { data } => {
            return conn.send(Priority::Normal, reply::echo(&data, reference, size))
        }
    };
    match (outcome, reference) {
        (Ok(()), Some(reference)) => conn.send(Priority::Critical, reply::ok(reference)),
        (Ok(()), None) => {}
        (Err((code, text)), reference) => {
            conn.send(Priority::Critical, reply::error(reference, code, &text))
        }
    }
}

/// Answers a request refused by the rate limit named `limit` (see [`crate::limits`]).
pub fn refuse_rate_limited(conn: &Conn, reference: Option<&Json<'_>>, limit: &str) {
    let text = format!("over limits.{limit}; request not carried out");
    conn.send(
        Priority::Critical,
        reply::error(reference, ErrorCode::RateLimited, &text),
    );
}

/// Closes a connection over its rate limits `violations_before_close` times.
pub fn close_rate_limited(conn: &Conn) {
    conn.close(Some((1008, "rate limit exceeded")), CloseKind::Final, None);
}

/// Answers a binary frame on `/ws`, where protocol v1 expects JSON text.
pub fn reject_binary(conn: &Conn) {
    let text = "binary frames are not accepted on /ws; send JSON requests as text frames";
    conn.send(
        Priority::Critical,
        reply::error(None, ErrorCode::BinaryNotSupported, text),
    );
}

type Outcome = Result<(), (ErrorCode, String)>;

fn subscribe(shard: &Shard, conn: &Conn, channel: &str) -> Outcome {
    shard
        .broker(|broker, _| broker.subscribe(conn.id(), channel))
        .map_err(refused)
}

fn unsubscribe(shard: &Shard, conn: &Conn, channel: &str) -> Outcome {
    shard
        .broker(|broker, out| broker.unsubscribe(conn.id(), channel, out))
        .map_err(refused)
}

fn refused(refusal: Refusal) -> (ErrorCode, String) {
    (refusal.code(), refusal.to_string())
}
