//! What a shard's broker does with what another shard's broker sent it (and with the requests
//! it hands itself): the one dispatch of [`ShardMessage`]s.

use super::effects::Effects;
use super::groups::Member;
use super::messages::ShardMessage;
use super::requests::Answer;
use super::Broker;

impl Broker {
    /// Handles what another shard's broker sent.
    pub fn receive(&mut self, message: ShardMessage, now: u64, out: &mut Effects) {
        match message {
            ShardMessage::PresenceJoin {
                channel,
                conn,
                user,
            } => {
                if self.presence.join(&channel, conn, user.clone()) {
                    self.broadcast_presence("join", &channel, user.as_deref(), conn, out);
                }
            }
            ShardMessage::PresenceLeave { channel, conn } => {
                if let Some(user) = self.presence.leave(&channel, conn) {
                    self.broadcast_presence("leave", &channel, user.as_deref(), conn, out);
                }
            }
            ShardMessage::PresenceEvent { event } => {
                if let Some(watchers) = self.watchers.get(&*event.channel) {
                    out.deliver(&event, watchers.ids());
                }
            }
            ShardMessage::PresenceQuery {
                channel,
                origin,
                token,
            } => {
                let snapshot = self
                    .presence
                    .snapshot(channel, self.config.presence_max_users);
                let answer = ShardMessage::PresenceAnswer { token, snapshot };
                if origin == self.config.shard {
                    self.receive(answer, now, out);
                } else {
                    out.send_to_shard(origin, answer);
                }
            }
            ShardMessage::PresenceAnswer { token, snapshot } => out.presence(token, snapshot),
            ShardMessage::GroupJoin {
                key,
                balance,
                member,
                load,
                token,
                ack,
            } => {
                let joined = match ack {
                    Some(durable) => self.join_queue(&key, member, durable, now, out),
                    None => {
                        let member = Member { id: member, load };
                        self.homed.join(key.clone(), balance, member);
                        Ok(())
                    }
                };
                let answer = match joined {
                    Ok(()) => ShardMessage::GroupJoined { token },
                    Err(refusal) => ShardMessage::GroupRefused {
                        key,
                        member,
                        token,
                        refusal,
                    },
                };
                self.tell(member.shard(), answer, now, out);
            }
            ShardMessage::GroupJoined { token } => self.answer_here(token, Answer::Ok, out),
            ShardMessage::GroupRefused {
                key,
                member,
                token,
                refusal,
            } => {
                if let Some(conn) = self.conns.get_mut(member) {
                    conn.groups.remove(&key);
                }
                self.answer_here(token, Answer::Refused(refusal), out);
            }
            ShardMessage::GroupLeave { key, member } => {
                self.homed.leave(&key, member);
                self.leave_queue(&key, member, now, out);
            }
            ShardMessage::GroupMessage {
                key,
                member,
                message,
            } => {
                let conn = self.conns.get(member);
                if let Some(load) = conn.and_then(|c| c.load.as_ref()) {
                    load.sub_in_flight(message.frame.len());
                }
                if conn.is_some_and(|c| c.groups.contains(&key)) {
                    out.deliver(&message, [member]);
                } else {
                    self.retry(key, message, out);
                }
            }
            ShardMessage::Online { user, conn } => self.inboxes.online(user, conn, now, out),
            ShardMessage::Offline { user, conn } => self.inboxes.offline(&user, conn, now, out),
            ShardMessage::InboxPut(put) => self.inboxes.put(*put, now, out),
            ShardMessage::Settle {
                user,
                id,
                settle,
                origin,
            } => self.inboxes.settle(&user, &id, settle, origin, now, out),
            ShardMessage::Cancel {
                user,
                id,
                by,
                origin,
            } => self.inboxes.cancel(&user, &id, by, origin, out),
            ShardMessage::Deliver { to, message, route } => {
                if let Some(conn) = self.conns.get_mut(to) {
                    if let Some((id, queue)) = route {
                        conn.acks.insert(id, queue);
                    }
                    out.deliver(&message, [to]);
                }
            }
            ShardMessage::Forget { to, id } => {
                if let Some(conn) = self.conns.get_mut(to) {
                    conn.acks.remove(&id);
                }
            }
            ShardMessage::SettleQueued {
                queue,
                id,
                settle,
                origin,
            } => {
                self.queues.settle(&queue, &id, settle, origin, now, out);
                self.carry_routes(out);
            }
            ShardMessage::GroupDelete { key, origin } => self.undurable(&key, origin, out),
            ShardMessage::SchedulePut(request) => self.schedule_put(*request, now, out),
            ShardMessage::CancelScheduled {
                channel,
                id,
                by,
                origin,
            } => self.cancel_scheduled(channel, &id, by, origin, out),
            ShardMessage::QueuePut(put) => {
                self.queues.put(*put, now, out);
                self.carry_routes(out);
            }
            ShardMessage::Answer { token, answer } => self.answer_here(token, answer, out),
            ShardMessage::GroupRetry { key, message } => self.pick_again(key, &message, out),
            ShardMessage::Sequence(message) => self.sequence(*message, now, out),
            ShardMessage::HistoryQuery(query) => self.answer_query(*query, now, out),
            ShardMessage::HistoryReply(reply) => {
                let (query, read) = *reply;
                self.history_reply(query, read, out);
            }
        }
    }
}
