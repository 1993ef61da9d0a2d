//! Queue groups (one of N): the registry a group's *home shard* keeps. Every published message
//! reaches every shard, so the home sees each message on a channel its groups match, and picks
//! exactly one member per group, wherever the member lives; a member on another shard gets the
//! message through that shard's mailbox (one more hop).
//!
//! The home of a group is `hash(channel, group) % shards`: members join and leave it through the
//! mailboxes, and picking needs no lock and no coordination between shards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::ids::ConnId;
use crate::protocol::Balance;
use crate::topic;

/// A queue group: a channel (or pattern) and a group name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub channel: Arc<str>,
    pub group: Arc<str>,
}

impl GroupKey {
    /// The shard that keeps the group's members and picks among them.
    pub fn home(&self, shards: usize) -> usize {
        crate::ids::home_shard([&*self.channel, &*self.group], shards)
    }
}

/// How loaded a member is: what its outbox holds (written by its shard) plus what the home has
/// sent it that its shard has not queued yet. Relaxed atomics: a slightly stale figure only
/// makes a pick slightly less even.
#[derive(Debug, Default)]
pub struct Load {
    queued: AtomicUsize,
    in_flight: AtomicUsize,
}

impl Load {
    /// The member's outbox now holds `bytes`.
    pub fn set_queued(&self, bytes: usize) {
        self.queued.store(bytes, Ordering::Relaxed);
    }

    pub(super) fn add_in_flight(&self, bytes: usize) {
        self.in_flight.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn sub_in_flight(&self, bytes: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(bytes))
            });
    }

    fn bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed) + self.in_flight.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(super) struct Member {
    pub(super) id: ConnId,
    pub(super) load: Arc<Load>,
}

#[derive(Debug)]
struct Group {
    balance: Balance,
    members: Vec<Member>,
    /// Where the next round-robin pick (or the next tie-break) starts.
    next: usize,
}

impl Group {
    fn pick(&mut self) -> Option<&Member> {
        let len = self.members.len();
        if len == 0 {
            return None;
        }
        let start = self.next % len;
        let chosen = match self.balance {
            Balance::RoundRobin => start,
            Balance::LeastLoaded => (0..len)
                .map(|i| (start + i) % len)
                .min_by_key(|&i| self.members[i].load.bytes())
                .unwrap_or(start),
        };
        self.next = chosen + 1;
        self.members.get(chosen)
    }
}

/// The groups whose home is this shard.
#[derive(Debug, Default)]
pub(super) struct Groups {
    groups: HashMap<GroupKey, Group>,
    /// Channel → groups on exactly that channel.
    exact: HashMap<Arc<str>, Vec<GroupKey>>,
    /// Groups on patterns (matched one by one: groups are few).
    patterns: Vec<GroupKey>,
}

impl Groups {
    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds `member` to the group; the group's balance is set by its first member.
    pub(super) fn join(&mut self, key: GroupKey, balance: Balance, member: Member) {
        let group = match self.groups.get_mut(&key) {
            Some(group) => group,
            None => {
                if topic::is_pattern(&key.channel) {
                    self.patterns.push(key.clone());
                } else {
                    let list = self.exact.entry(key.channel.clone()).or_default();
                    list.push(key.clone());
                }
                self.groups.entry(key).or_insert(Group {
                    balance,
                    members: Vec::new(),
                    next: 0,
                })
            }
        };
        if group.members.iter().all(|m| m.id != member.id) {
            group.members.push(member);
        }
    }

    /// Removes `id` from the group; a group without members is forgotten.
    pub(super) fn leave(&mut self, key: &GroupKey, id: ConnId) {
        let Some(group) = self.groups.get_mut(key) else {
            return;
        };
        group.members.retain(|m| m.id != id);
        if !group.members.is_empty() {
            return;
        }
        self.groups.remove(key);
        if topic::is_pattern(&key.channel) {
            self.patterns.retain(|k| k != key);
        } else if let Some(list) = self.exact.get_mut(&key.channel) {
            list.retain(|k| k != key);
            if list.is_empty() {
                self.exact.remove(&key.channel);
            }
        }
    }

    /// Calls `deliver` with one member of every group whose channel or pattern matches
    /// `channel`.
    pub(super) fn route(&mut self, channel: &str, mut deliver: impl FnMut(&GroupKey, &Member)) {
        let exact = self.exact.get(channel).into_iter().flatten();
        let matching = self
            .patterns
            .iter()
            .filter(|k| topic::matches(&k.channel, channel));
        for key in exact.chain(matching) {
            if let Some(member) = self.groups.get_mut(key).and_then(Group::pick) {
                deliver(key, member);
            }
        }
    }

    /// One member of the group `key`, if it has any.
    pub(super) fn pick(&mut self, key: &GroupKey) -> Option<&Member> {
        self.groups.get_mut(key).and_then(Group::pick)
    }
}
