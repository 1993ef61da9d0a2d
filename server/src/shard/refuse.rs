//! Answers that refuse a request or a connection for its rate or its frame type, shared by
//! the request path and the session's frame reader.

use wsedge_core::protocol::envelope::{ErrorCode, Json};
use wsedge_core::protocol::Priority;

use super::Shard;
use crate::conn::{CloseKind, CloseReason, Conn};

/// Answers a request refused by the rate limit named `limit` (see [`crate::limits`]).
pub fn refuse_rate_limited(shard: &Shard, conn: &Conn, reference: Option<&Json<'_>>, limit: &str) {
    shard.metrics().rate_limited[crate::metrics::limit_index(limit)].inc();
    let text = format!("over limits.{limit}; request not carried out");
    conn.send(
        Priority::Critical,
        shard.error(reference, ErrorCode::RateLimited, &text),
    );
}

/// Closes a connection over its rate limits `violations_before_close` times.
pub fn close_rate_limited(conn: &Conn) {
    let status = Some((1008, "rate limit exceeded"));
    conn.close(status, CloseReason::RateLimited, CloseKind::Final, None);
}

/// Answers a binary frame on `/ws`, where protocol v1 expects JSON text.
pub fn reject_binary(shard: &Shard, conn: &Conn) {
    shard.metrics().received[crate::metrics::op_index("binary")].inc();
    let text = "binary frames are not accepted on /ws; send JSON requests as text frames";
    conn.send(
        Priority::Critical,
        shard.error(None, ErrorCode::BinaryNotSupported, text),
    );
}
