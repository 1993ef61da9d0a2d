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

use super::effects::{Answer, Effects};
use super::inbox::Origin;
use super::messages::ShardMessage;
use super::{Broker, Refusal};
use crate::ids::ConnId;
use crate::message::Published;
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

impl Broker {
    /// Makes `id` a member of queue group `group` on `channel` (a name or a pattern), with
    /// `load` as its load; [`Action::Joined`] with `token` follows once the group's home has it
    /// (at once when the home is this shard). Already a member: joined at once.
    pub fn join_group(
        &mut self,
        id: ConnId,
        key: GroupKey,
        balance: Balance,
        load: &Arc<Load>,
        token: u64,
        out: &mut Effects,
    ) -> Result<(), Refusal> {
        let Some(conn) = self.conns.get_mut(id) else {
            return Ok(());
        };
        if conn.groups.contains(&key) {
            let origin = Origin {
                shard: self.config.shard,
                token,
            };
            out.answer(origin, Answer::Ok);
            return Ok(());
        }
        if !conn.peer.permissions.may_subscribe(&key.channel) {
            return Err(Refusal::Forbidden(format!(
                "subscribe to {:?}",
                key.channel
            )));
        }
        let max = self.config.max_subscriptions;
        if conn.held() >= max {
            return Err(Refusal::TooManySubscriptions(max));
        }
        conn.groups.insert(key.clone());
        conn.load = Some(load.clone());
        let home = key.home(self.config.shards);
        let member = Member {
            id,
            load: load.clone(),
        };
        if home == self.config.shard {
            self.homed.join(key, balance, member);
            self.answer_here(token, Answer::Ok, out);
        } else {
            let load = member.load;
            let join = ShardMessage::GroupJoin {
                key,
                balance,
                member: id,
                load,
                token,
            };
            out.send_to_shard(home, join);
        }
        Ok(())
    }

    /// Takes `id` out of queue group `key`: it gets no message the home picks from now on.
    pub fn leave_group(
        &mut self,
        id: ConnId,
        key: GroupKey,
        out: &mut Effects,
    ) -> Result<(), Refusal> {
        let removed = self
            .conns
            .get_mut(id)
            .is_some_and(|conn| conn.groups.remove(&key));
        if !removed {
            let text = format!("{}\" in group \"{}", key.channel, key.group);
            return Err(Refusal::NotSubscribed(text.into()));
        }
        self.leave_home(key, id, out);
        Ok(())
    }

    pub(super) fn leave_home(&mut self, key: GroupKey, id: ConnId, out: &mut Effects) {
        let home = key.home(self.config.shards);
        if home == self.config.shard {
            self.homed.leave(&key, id);
        } else {
            out.send_to_shard(home, ShardMessage::GroupLeave { key, member: id });
        }
    }

    /// A group message whose member left goes back to the group's home for another pick.
    pub(super) fn retry(&mut self, key: GroupKey, message: Arc<Published>, out: &mut Effects) {
        let home = key.home(self.config.shards);
        if home == self.config.shard {
            self.receive(ShardMessage::GroupRetry { key, message }, 0, out);
        } else {
            out.send_to_shard(home, ShardMessage::GroupRetry { key, message });
        }
    }

    /// Picks one member of each group homed here that `message`'s channel matches.
    pub(super) fn route_groups(&mut self, message: &Arc<Published>, out: &mut Effects) {
        let Broker { homed, config, .. } = self;
        homed.route(&message.channel, |key, member| {
            send_to_member(config.shard, key.clone(), member, message, out);
        });
    }
}

/// Delivers a group's `message` to the picked `member`: at once on this shard (`shard`), else
/// through the member's shard, counting it in the member's load while it travels.
pub(super) fn send_to_member(
    shard: usize,
    key: GroupKey,
    member: &Member,
    message: &Arc<Published>,
    out: &mut Effects,
) {
    if member.id.shard() == shard {
        out.deliver(message, [member.id]);
    } else {
        member.load.add_in_flight(message.frame.len());
        let message = message.clone();
        let to = member.id.shard();
        out.send_to_shard(
            to,
            ShardMessage::GroupMessage {
                key,
                member: member.id,
                message,
            },
        );
    }
}
