//! Who waits for the answer to a request that went to other shards.

use wsedge_core::broker::Answer;
use wsedge_core::ids::ConnId;

/// Who waits for the answer to a request registered with `Shard::pending`.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A connection, answered with a frame (`ok` only when the request had a `ref`).
    Conn {
        conn: ConnId,
        reference: Option<String>,
    },
    /// An HTTP request handler on this shard.
    Http(tokio::sync::oneshot::Sender<Answer>),
    /// A persist publish, waiting for every shard and their durable groups.
    Gather(Gather),
}

/// A direct message whose `ok` waits for the other shards to say how many connections it reached.
#[derive(Debug)]
pub(super) struct PendingSend {
    pub(super) conn: ConnId,
    /// The request's `ref`, encoded; no `ok` without one.
    pub(super) reference: Option<String>,
    pub(super) delivered: usize,
    pub(super) waiting: usize,
}

/// A persist publish whose `ok` waits for every other shard (`shards` left) and for the
/// durable groups they and this one put it in (`waiting`, which answers may bring below zero
/// before their shard's count arrives).
#[derive(Debug)]
pub(super) struct Gather {
    pub(super) conn: ConnId,
    pub(super) reference: Option<String>,
    pub(super) shards: usize,
    pub(super) waiting: i64,
    /// The first refusal a durable group answered.
    pub(super) refused: Option<Answer>,
    /// A durable group had it already (a repeated `msg_id`).
    pub(super) duplicate: bool,
}
