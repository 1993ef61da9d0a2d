//! What one shard's broker tells another's: queue group joins, leaves and picked messages,
//! presence changes, queries and answers. The shards carry them through their mailboxes.

use std::sync::Arc;

use super::groups::{GroupKey, Load};
use super::presence::Snapshot;
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::Balance;

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
    },
    /// To a member's shard: its join is in place.
    GroupJoined { token: u64 },
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
}

/// Whether a connection joined or left a channel, for its presence.
#[derive(Debug, Clone, Copy)]
pub(super) enum PresenceChange {
    Join,
    Leave,
}

impl ShardMessage {
    /// Whether it carries a message (bounded by the mailbox's byte budget), rather than control
    /// (bounded by the connections and their memberships).
    pub fn message(&self) -> Option<&Arc<Published>> {
        match self {
            ShardMessage::GroupMessage { message, .. } => Some(message),
            _ => None,
        }
    }
}
