//! The requests that travel between shards and wait for an answer: who waits ([`Origin`]),
//! the answer ([`Answer`]), and the inbox's requests ([`InboxMessage`], [`Settle`]).

use std::sync::Arc;

use bytes::Bytes;

use super::history::{Position, Read};
use super::refusal::Refusal;
use crate::ids::ConnId;
use crate::protocol::Priority;

/// Who waits for the answer to a request: the token shard `shard` registered it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub shard: usize,
    pub token: u64,
}

/// A message for a user's inbox (or a queue), on its way from the sender's shard to the
/// user's home (the queue's keeper).
#[derive(Debug)]
pub struct InboxMessage {
    /// The user (the queue's name).
    pub user: Arc<str>,
    /// The message id, which the recipient acknowledges.
    pub id: Arc<str>,
    /// The complete text frame (its JSON carries `"ack":true`).
    pub frame: Bytes,
    pub priority: Priority,
    /// Written to the store before the sender's `ok`.
    pub persist: bool,
    pub msg_id: Option<Box<str>>,
    /// Who waits for the answer (nobody, for a best-effort publish into a queue).
    pub origin: Option<Origin>,
    /// Not delivered before this Unix millisecond (a scheduled send; it is persisted); 0: now.
    pub not_before: u64,
    /// The sender's user.
    pub from: Option<Arc<str>>,
}

/// What a recipient says of a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Done: remove it.
    Ack,
    /// Not now: deliver it again after `delay_ms`.
    Nak { delay_ms: u64 },
    /// Never: dead-letter it.
    Term { reason: Option<Box<str>> },
}

/// The outcome of a request whose answer waited (for another shard, or the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Carried out: `{"op":"ok"}`.
    Ok,
    /// A scheduled message is in its inbox: `{"op":"ok","scheduled":"<id>"}`.
    Scheduled(Arc<str>),
    /// Subscribed to a channel with history: `{"op":"ok","epoch":E,"offset":N}`, with
    /// `"recovered"` when the subscribe gave `since`.
    Position {
        epoch: Arc<str>,
        offset: u64,
        recovered: Option<bool>,
    },
    /// The answer to a `history` request.
    History { channel: Arc<str>, read: Read },
    /// A repeat of a `msg_id` within the dedup window: `{"op":"ok","duplicate":true}`, carried
    /// out nowhere.
    Duplicate,
    /// Refused: an `error` frame.
    Refused(Refusal),
}

/// A message published to a channel with history (or with a `msg_id`), on its way to the
/// channel's home, which checks its `msg_id`, numbers it and keeps it (with history), and sends
/// it to every shard.
#[derive(Debug)]
pub struct Sequence {
    pub channel: Arc<str>,
    pub id: Box<str>,
    pub priority: Priority,
    /// The JSON text of `data`.
    pub data: Bytes,
    /// Published once per `msg_id` within the dedup window.
    pub msg_id: Option<Box<str>>,
    pub origin: Origin,
    /// See [`crate::message::Published::born_us`].
    pub born_us: u64,
}

/// A question to a channel's home about its history: a subscribe that wants the channel's
/// position (and, with `since`, what it missed), or a `history` read.
#[derive(Debug)]
pub struct HistoryQuery {
    pub channel: Arc<str>,
    pub since: Option<Position>,
    pub limit: usize,
    /// For a subscribe: the connection and whether it wants presence events.
    pub subscribe: Option<(ConnId, bool)>,
    pub origin: Origin,
}

/// A durable history message being written, at its channel's home: kept, published and
/// confirmed to `origin` once the store has it.
#[derive(Debug)]
pub(super) struct HistoryWrite {
    pub(super) channel: Arc<str>,
    pub(super) epoch: Arc<str>,
    pub(super) offset: u64,
    pub(super) message: Arc<crate::message::Published>,
    pub(super) origin: Origin,
}

/// A publish scheduled for later, on its way to its channel's home.
#[derive(Debug)]
pub struct SchedulePublish {
    pub channel: Arc<str>,
    /// The message id it will be published with.
    pub id: Box<str>,
    pub priority: Priority,
    /// The JSON text of `data`.
    pub data: Bytes,
    /// Published at this Unix millisecond.
    pub not_before: u64,
    /// The publisher's user, who alone may cancel it.
    pub from: Option<Arc<str>>,
    pub origin: Origin,
}
