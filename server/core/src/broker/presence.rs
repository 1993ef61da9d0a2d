//! Presence: who is subscribed to a channel, on any shard, kept by the channel's *home shard*
//! (`hash(channel) % shards`). Shards tell the home when a connection subscribes to or leaves
//! the channel; the home answers `presence` queries and tells every shard about joins and
//! leaves, for the connections that asked for those events. Plain subscriptions to a channel
//! count; pattern subscriptions and queue group memberships do not.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ids::{ConnId, IdMap};

/// Who is on a channel, as a `presence` answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub channel: Arc<str>,
    /// Connections subscribed, anonymous ones included.
    pub connections: usize,
    /// Distinct user ids, at most the configured number, sorted.
    pub users: Vec<Arc<str>>,
    /// More users than listed.
    pub truncated: bool,
}

/// The home shard of `channel`'s presence.
pub fn home(channel: &str, shards: usize) -> usize {
    crate::ids::home_shard([channel], shards)
}

#[derive(Debug, Default)]
struct Entry {
    conns: IdMap<ConnId, Option<Arc<str>>>,
    /// User → how many of its connections are subscribed.
    users: HashMap<Arc<str>, usize>,
}

/// The channels whose presence this shard keeps.
#[derive(Debug, Default)]
pub(super) struct Presence {
    channels: HashMap<Arc<str>, Entry>,
}

impl Presence {
    /// `conn` (of `user`) subscribed; false if it was counted already.
    pub(super) fn join(
        &mut self,
        channel: &Arc<str>,
        conn: ConnId,
        user: Option<Arc<str>>,
    ) -> bool {
        let entry = self.channels.entry(channel.clone()).or_default();
        if entry.conns.contains_key(&conn) {
            return false;
        }
        if let Some(user) = &user {
            *entry.users.entry(user.clone()).or_default() += 1;
        }
        entry.conns.insert(conn, user);
        true
    }

    /// `conn` left; its user, if it was counted (`Some(None)`: anonymous).
    pub(super) fn leave(&mut self, channel: &str, conn: ConnId) -> Option<Option<Arc<str>>> {
        let entry = self.channels.get_mut(channel)?;
        let user = entry.conns.remove(&conn)?;
        if let Some(name) = &user {
            if let Some(count) = entry.users.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    entry.users.remove(name);
                }
            }
        }
        if entry.conns.is_empty() {
            self.channels.remove(channel);
        }
        Some(user)
    }

    /// Whether anyone is subscribed to `channel`.
    pub(super) fn has(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    pub(super) fn snapshot(&self, channel: Arc<str>, max_users: usize) -> Snapshot {
        let Some(entry) = self.channels.get(&channel) else {
            return Snapshot {
                channel,
                connections: 0,
                users: Vec::new(),
                truncated: false,
            };
        };
        let mut users: Vec<Arc<str>> = entry.users.keys().cloned().collect();
        let truncated = users.len() > max_users;
        if truncated {
            // The first `max_users` in order, in linear time: a query on a crowded channel
            // does not sort every user.
            users.select_nth_unstable(max_users);
            users.truncate(max_users);
        }
        users.sort_unstable();
        Snapshot {
            channel,
            connections: entry.conns.len(),
            users,
            truncated,
        }
    }
}
