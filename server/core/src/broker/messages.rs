//! What one shard's broker tells another's: queue group joins, leaves and picked messages,
//! presence changes, queries and answers. The shards carry them through their mailboxes.

use std::sync::Arc;

use super::groups::{GroupKey, Load};
use super::history::Read;
use super::presence::Snapshot;
use super::refusal::Refusal;
use super::requests::{
    Answer, HistoryQuery, InboxMessage, Origin, SchedulePublish, Sequence, Settle,
};
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::{Balance, Priority};

/// What one shard's broker tells another's, through the mailboxes.
#[derive(Debug)]
pub enum ShardMessage {
    /// To a group's home: `member` joins; answer [`ShardMessage::GroupJoined`] with `token`.
    GroupJoin {
        key: GroupKey,
        balance: Balance,
        member: ConnId,
        load: Arc<Load>,
        token: u64,
        /// An acknowledged group (`Some(durable)`): its messages wait in a queue at the home.
        ack: Option<bool>,
    },
    /// To a member's shard: its join is in place.
    GroupJoined { token: u64 },
    /// To a member's shard: its join was refused; it is no member.
    GroupRefused {
        key: GroupKey,
        member: ConnId,
        token: u64,
        refusal: Refusal,
    },
    /// To a group's home: `member` left (unsubscribed or disconnected).
    GroupLeave { key: GroupKey, member: ConnId },
    /// To a member's shard: the home picked `member` for `message`.
    GroupMessage {
        key: GroupKey,
        member: ConnId,
        message: Arc<Published>,
    },
    /// To a group's home: the picked member had left; pick another.
    GroupRetry {
        key: GroupKey,
        message: Arc<Published>,
    },
    /// To a channel's presence home: `conn` subscribed.
    PresenceJoin {
        channel: Arc<str>,
        conn: ConnId,
        user: Option<Arc<str>>,
    },
    /// To a channel's presence home: `conn` unsubscribed or disconnected.
    PresenceLeave { channel: Arc<str>, conn: ConnId },
    /// From a presence home to every shard: a join or leave event, for the connections
    /// subscribed with `presence`.
    PresenceEvent { event: Arc<Published> },
    /// To a channel's presence home: who is there? Answer shard `origin` with `token`.
    PresenceQuery {
        channel: Arc<str>,
        origin: usize,
        token: u64,
    },
    /// From a presence home: the answer to query `token`.
    PresenceAnswer { token: u64, snapshot: Snapshot },
    /// To a user's home: connection `conn` of `user` opened.
    Online { user: Arc<str>, conn: ConnId },
    /// To a user's home: connection `conn` of `user` closed.
    Offline { user: Arc<str>, conn: ConnId },
    /// To a user's home: a message for the user's inbox.
    InboxPut(Box<InboxMessage>),
    /// To a user's home: a connection of `user` settles message `id`.
    Settle {
        user: Arc<str>,
        id: Box<str>,
        settle: Settle,
        origin: Origin,
    },
    /// To a user's home: `by` cancels scheduled message `id`.
    Cancel {
        user: Arc<str>,
        id: Box<str>,
        by: Option<Arc<str>>,
        origin: Origin,
    },
    /// From a user's home or a queue's keeper to a connection's shard: deliver `message` to
    /// `to`; from a queue, with `route` (the message id and the queue) so that `to`'s `ack`
    /// finds the queue.
    Deliver {
        to: ConnId,
        message: Arc<Published>,
        route: Option<(Arc<str>, Arc<str>)>,
    },
    /// From a queue's keeper to a holder's shard: message `id` left the queue; `to` can no
    /// longer settle it.
    Forget { to: ConnId, id: Arc<str> },
    /// To a queue's keeper: a holder settles message `id` of `queue`.
    SettleQueued {
        queue: Arc<str>,
        id: Box<str>,
        settle: Settle,
        origin: Origin,
    },
    /// To a channel's home: a publish for later.
    SchedulePut(Box<SchedulePublish>),
    /// To a channel's home: `by` cancels scheduled publish `id`.
    CancelScheduled {
        channel: Arc<str>,
        id: Box<str>,
        by: Option<Arc<str>>,
        origin: Origin,
    },
    /// To a group's home: the group is durable no more, and what it holds goes.
    GroupDelete { key: GroupKey, origin: Origin },
    /// To a group's home: a message for its queue (a persist publish's, or a replayed dead
    /// letter).
    QueuePut(Box<InboxMessage>),
    /// To the shard that registered request `token`: its answer.
    Answer { token: u64, answer: Answer },
    /// To a channel's home: a message to number, keep and send to every shard.
    Sequence(Box<Sequence>),
    /// To a channel's home: a subscribe's or a reader's question.
    HistoryQuery(Box<HistoryQuery>),
    /// From a channel's home to the asking shard, behind the channel's messages sent before
    /// it (through the same queue): the answer.
    HistoryReply(Box<(HistoryQuery, Read)>),
}

/// Whether a connection joined or left a channel, for its presence.
#[derive(Debug, Clone, Copy)]
pub(super) enum PresenceChange {
    Join,
    Leave,
}

impl ShardMessage {
    /// The frame bytes and priority of what it carries, when it goes through the bounded queue
    /// (a message, or a request a client can repeat at will); `None` for control, which is
    /// bounded by the connections and their memberships and must never be lost. An
    /// acknowledged delivery ([`ShardMessage::Deliver`]) is control: its count is bounded by
    /// `ack.max_pending` per user or holder, its frame is the one its inbox holds anyway, and
    /// dropped it would wait `ack.wait_ms` for its redelivery.
    pub fn load(&self) -> Option<(usize, Priority)> {
        match self {
            ShardMessage::GroupMessage { message, .. } => {
                Some((message.frame.len(), message.priority))
            }
            ShardMessage::InboxPut(put) | ShardMessage::QueuePut(put) => {
                Some((put.frame.len(), put.priority))
            }
            ShardMessage::Sequence(s) => Some((s.data.len(), s.priority)),
            ShardMessage::SchedulePut(s) => Some((s.data.len(), s.priority)),
            ShardMessage::HistoryQuery(_) => Some((0, Priority::Critical)),
            ShardMessage::HistoryReply(reply) => {
                let bytes = reply.1.messages.iter().map(|m| m.frame.len()).sum();
                Some((bytes, Priority::Critical))
            }
            ShardMessage::Settle { .. }
            | ShardMessage::SettleQueued { .. }
            | ShardMessage::Cancel { .. }
            | ShardMessage::CancelScheduled { .. }
            | ShardMessage::GroupDelete { .. } => Some((0, Priority::Critical)),
            _ => None,
        }
    }

    /// Who waits for an answer to it, if anyone: they must hear when it cannot be queued.
    pub fn origin(&self) -> Option<Origin> {
        match self {
            ShardMessage::InboxPut(put) | ShardMessage::QueuePut(put) => put.origin,
            ShardMessage::Sequence(s) => Some(s.origin),
            ShardMessage::SchedulePut(s) => Some(s.origin),
            ShardMessage::HistoryQuery(q) => Some(q.origin),
            ShardMessage::HistoryReply(reply) => Some(reply.0.origin),
            ShardMessage::Settle { origin, .. }
            | ShardMessage::SettleQueued { origin, .. }
            | ShardMessage::Cancel { origin, .. }
            | ShardMessage::CancelScheduled { origin, .. }
            | ShardMessage::GroupDelete { origin, .. } => Some(*origin),
            _ => None,
        }
    }
}
