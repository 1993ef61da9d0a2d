//! The broker's side of acknowledged subscriptions: a plain subscription made with `ack` has a
//! queue on the subscriber's shard; a group made with `ack` has one at the group's home (durable
//! with `durable`). Every shard sees every publish, so each one puts a message into the queues
//! it keeps whose channel or pattern matches; the rules of a queue are in [`super::inbox`].
//!
//! A holder's shard remembers which queue each message it was given came from, so that the
//! holder's `ack` (which names only the message) goes back to that queue.

use std::sync::Arc;

use super::effects::Effects;
use super::groups::GroupKey;
use super::inbox::{answer, with_field, Route};
use super::messages::ShardMessage;
use super::queues::{group_queue, queue_group, sub_queue};
use super::records::{Record, StoredMessage};
use super::refusal::Refusal;
use super::requests::{Answer, InboxMessage, Origin, Settle};
use super::Broker;
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::reply;

impl Broker {
    /// Whether any queue on this shard takes published messages.
    pub fn has_queues(&self) -> bool {
        !self.acked.is_empty()
    }

    /// Subscribes `id` to `channel` with acknowledgements: its messages wait in the
    /// subscription's own queue on this shard. Already subscribed so is not an error.
    pub fn subscribe_acked(
        &mut self,
        id: ConnId,
        channel: &str,
        now: u64,
        out: &mut Effects,
    ) -> Result<(), Refusal> {
        self.check_subscribe(id, channel)?;
        let Some(conn) = self.conns.get_mut(id) else {
            return Ok(());
        };
        if conn.subscriptions.contains(channel) {
            return match conn.acked.contains(channel) {
                true => Ok(()),
                false => Err(Refusal::Subscribed(channel.into())),
            };
        }
        conn.subscriptions.insert(channel.into());
        conn.acked.insert(channel.into());
        let queue = sub_queue(id, channel);
        self.queues.open(queue.clone(), false);
        self.acked.add(channel, &queue);
        self.queues.online(queue, id, now, out);
        self.carry_routes(out);
        Ok(())
    }

    /// Ends `id`'s acknowledged subscription to `channel`: what its queue holds is forgotten.
    pub(super) fn unsubscribe_acked(&mut self, id: ConnId, channel: &str, out: &mut Effects) {
        let queue = sub_queue(id, channel);
        self.acked.remove(channel, &queue);
        self.queues.close(&queue, true);
        self.carry_routes(out);
    }

    /// At a group's home: `member` joins acknowledged group `key` (durable, when asked: from
    /// then on the group keeps its messages, across restarts, members or not). Refused when
    /// that would make one durable group more than `max_durable_groups`.
    pub(super) fn join_queue(
        &mut self,
        key: &GroupKey,
        member: ConnId,
        durable: bool,
        now: u64,
        out: &mut Effects,
    ) -> Result<(), Refusal> {
        let queue = group_queue(key);
        let max = self.config.delivery.max_durable_groups;
        if durable && !self.queues.is_durable(&queue) && self.queues.durable_count() >= max {
            return Err(Refusal::TooManyDurableGroups(max));
        }
        if durable && !self.queues.is_durable(&queue) {
            let record = Record::Durable {
                queue: queue.clone(),
            };
            out.persist(None, vec![record]);
        }
        self.queues.open(queue.clone(), durable);
        self.acked.add(&key.channel, &queue);
        self.queues.online(queue, member, now, out);
        self.carry_routes(out);
        Ok(())
    }

    /// At a group's home: `member` left group `key`. What it had in flight goes to another
    /// member; a group that is not durable closes with its last member (what it holds waits
    /// for the next one, until it expires).
    pub(super) fn leave_queue(
        &mut self,
        key: &GroupKey,
        member: ConnId,
        now: u64,
        out: &mut Effects,
    ) {
        let queue = group_queue(key);
        if !self.queues.holds(&queue, member) {
            return;
        }
        self.queues.offline(&queue, member, now, out);
        if !self.queues.has_holders(&queue) && !self.queues.is_durable(&queue) {
            self.acked.remove(&key.channel, &queue);
            self.queues.close(&queue, false);
        }
        self.carry_routes(out);
    }

    /// Puts `message` into every queue on this shard that takes its channel. For a persist
    /// publish (`origin`), a durable queue answers `origin` once the message is stored;
    /// returns how many will.
    pub fn route_queued(
        &mut self,
        message: &Published,
        origin: Option<Origin>,
        now: u64,
        out: &mut Effects,
    ) -> usize {
        let mut queues = Vec::new();
        self.acked.matching(&message.channel, &mut queues);
        let payload = crate::protocol::frame::payload_of(&message.frame);
        let (Some(id), false) = (reply::message_id(payload), queues.is_empty()) else {
            return 0;
        };
        let id: Arc<str> = id.into();
        let frame = with_field(&message.frame, "\"ack\":true");
        let mut waiting = 0;
        for queue in queues {
            let durable = self.queues.is_durable(&queue);
            waiting += usize::from(durable && origin.is_some());
            let put = InboxMessage {
                user: queue,
                id: id.clone(),
                frame: frame.clone(),
                priority: message.priority,
                persist: durable,
                msg_id: message.msg_id.clone(),
                origin: origin.filter(|_| durable),
                not_before: 0,
                from: None,
            };
            self.queues.put(put, now, out);
        }
        self.carry_routes(out);
        waiting
    }

    /// Makes durable group `key` an ordinary one (at its home) and forgets the messages it
    /// holds, in memory and in the store; answered to `origin`.
    pub fn delete_durable(&mut self, key: GroupKey, origin: Origin, now: u64, out: &mut Effects) {
        let home = key.home(self.config.shards);
        self.tell(home, ShardMessage::GroupDelete { key, origin }, now, out);
    }

    /// At a group's home: see [`Broker::delete_durable`].
    pub(super) fn undurable(&mut self, key: &GroupKey, origin: Origin, out: &mut Effects) {
        let queue = group_queue(key);
        if let Err(refusal) = self.queues.undurable(&queue) {
            return out.answer(origin, Answer::Refused(refusal));
        }
        out.persist(
            None,
            vec![Record::DurableDelete {
                queue: queue.clone(),
            }],
        );
        if !self.queues.has_holders(&queue) {
            self.acked.remove(&key.channel, &queue);
            self.queues.close(&queue, false);
        }
        self.carry_routes(out);
        out.answer(origin, Answer::Ok);
    }

    /// Puts `message` (a replayed dead letter) in group queue `message.user`, at its home.
    pub fn send_to_queue(&mut self, message: InboxMessage, now: u64, out: &mut Effects) {
        let Some(key) = queue_group(&message.user) else {
            let refusal = Refusal::UnknownMessage(message.id.as_ref().into());
            return answer(out, message.origin, Answer::Refused(refusal));
        };
        let home = key.home(self.config.shards);
        self.tell(home, ShardMessage::QueuePut(Box::new(message)), now, out);
    }

    /// Connection `id` settles `msg` if a queue gave it `msg`: to that queue (at its keeper),
    /// answered to `origin`. `Err` gives the request back when no queue did.
    pub(super) fn settle_queued(
        &mut self,
        id: ConnId,
        msg: &str,
        settle: Settle,
        origin: Origin,
        now: u64,
        out: &mut Effects,
    ) -> Result<(), Settle> {
        let Some(conn) = self.conns.get_mut(id) else {
            return Err(settle);
        };
        let Some(queue) = conn.acks.get(msg).cloned() else {
            return Err(settle);
        };
        // After a `nak` it comes again, maybe here.
        if !matches!(settle, Settle::Nak { .. }) {
            conn.acks.remove(msg);
        }
        let home = queue_group(&queue).map_or(self.config.shard, |k| k.home(self.config.shards));
        let message = ShardMessage::SettleQueued {
            queue,
            id: msg.into(),
            settle,
            origin,
        };
        self.tell(home, message, now, out);
        Ok(())
    }

    /// The queue's deliveries to carry out and the routes to forget, since the last call.
    pub(super) fn carry_routes(&mut self, out: &mut Effects) {
        let Broker {
            queues,
            conns,
            config,
            ..
        } = self;
        for route in queues.take_routes() {
            match route {
                Route::Given {
                    to,
                    id,
                    queue,
                    message,
                } if to.shard() == config.shard => {
                    if let Some(conn) = conns.get_mut(to) {
                        conn.acks.insert(id, queue);
                        out.deliver(&message, [to]);
                    }
                }
                Route::Given {
                    to,
                    id,
                    queue,
                    message,
                } => {
                    let route = Some((id, queue));
                    let deliver = ShardMessage::Deliver { to, message, route };
                    out.send_to_shard(to.shard(), deliver);
                }
                Route::Taken { to, id } if to.shard() == config.shard => {
                    if let Some(conn) = conns.get_mut(to) {
                        conn.acks.remove(&id);
                    }
                }
                Route::Taken { to, id } => {
                    out.send_to_shard(to.shard(), ShardMessage::Forget { to, id });
                }
            }
        }
    }

    /// Puts back a durable group read from the store at start (its home is this shard).
    pub fn restore_durable(&mut self, queue: Arc<str>) {
        if let Some(key) = queue_group(&queue) {
            self.queues.open(queue.clone(), true);
            self.acked.add(&key.channel, &queue);
        }
    }

    /// Puts back a durable group's message read from the store at start.
    pub fn restore_queued(&mut self, queue: Arc<str>, seq: u64, message: StoredMessage, now: u64) {
        self.queues.restore(queue, seq, message, now);
    }
}
