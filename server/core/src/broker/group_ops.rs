//! The broker's side of queue groups: joins and leaves (at the group's home, through the
//! mailboxes when it is another shard), and the message picked for a member. The registry and
//! the pick are in [`super::groups`].

use std::sync::Arc;

use super::effects::Effects;
use super::groups::{GroupKey, Load, Member};
use super::messages::ShardMessage;
use super::queues::group_queue;
use super::refusal::Refusal;
use super::requests::{Answer, Origin};
use super::Broker;
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::Balance;

impl Broker {
    /// The home picks another member for a message whose member had left.
    pub(super) fn pick_again(
        &mut self,
        key: GroupKey,
        message: &Arc<Published>,
        out: &mut Effects,
    ) {
        let shard = self.config.shard;
        if let Some(member) = self.homed.pick(&key) {
            send_to_member(shard, key, member, message, out);
        }
    }

    /// Makes `id` a member of queue group `group` on `channel` (a name or a pattern), with
    /// `load` as its load; the answer to `token` follows once the group's home has it (at once
    /// when the home is this shard). Already a member: joined at once. With `ack`
    /// (`Some(durable)`), the group is acknowledged: its messages wait in a queue at the home
    /// (see [`super::acked`]).
    #[allow(clippy::too_many_arguments)]
    pub fn join_group(
        &mut self,
        id: ConnId,
        key: GroupKey,
        balance: Balance,
        load: &Arc<Load>,
        token: u64,
        ack: Option<bool>,
        now: u64,
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
        let join = ShardMessage::GroupJoin {
            key,
            balance,
            member: id,
            load: member.load,
            token,
            ack,
        };
        self.tell(home, join, now, out);
        Ok(())
    }

    /// Takes `id` out of queue group `key`: it gets no message the home picks from now on.
    pub fn leave_group(
        &mut self,
        id: ConnId,
        key: GroupKey,
        now: u64,
        out: &mut Effects,
    ) -> Result<(), Refusal> {
        let queue = group_queue(&key);
        let removed = self.conns.get_mut(id).is_some_and(|conn| {
            // What the group's queue gave it, it can no longer settle.
            conn.acks.retain(|_, q| *q != queue);
            conn.groups.remove(&key)
        });
        if !removed {
            let text = format!("{}\" in group \"{}", key.channel, key.group);
            return Err(Refusal::NotSubscribed(text.into()));
        }
        self.leave_home(key, id, now, out);
        Ok(())
    }

    pub(super) fn leave_home(&mut self, key: GroupKey, id: ConnId, now: u64, out: &mut Effects) {
        let home = key.home(self.config.shards);
        self.tell(home, ShardMessage::GroupLeave { key, member: id }, now, out);
    }

    /// A group message whose member left goes back to the group's home for another pick.
    pub(super) fn retry(&mut self, key: GroupKey, message: Arc<Published>, out: &mut Effects) {
        let home = key.home(self.config.shards);
        self.tell(home, ShardMessage::GroupRetry { key, message }, 0, out);
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
fn send_to_member(
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
