//! The broker's side of scheduled publishes: a publish for later goes to its channel's home,
//! which stores it, answers with its id, and publishes it when it is due (numbered first when
//! channels keep history). The schedules themselves are in [`super::schedules`].

use std::sync::Arc;

use super::effects::Effects;
use super::messages::ShardMessage;
use super::records::{Record, StoredMessage};
use super::refusal::Refusal;
use super::requests::{Answer, Origin, SchedulePublish, Sequence};
use super::Broker;
use crate::message::Published;
use crate::protocol::reply;

impl Broker {
    /// A publish for later: its channel's home stores it and answers `origin`
    /// (`"scheduled":"<message id>#<channel>"`).
    pub fn schedule_publish(&mut self, request: SchedulePublish, now: u64, out: &mut Effects) {
        let home = Self::channel_home(&request.channel, self.config.shards);
        self.tell(home, ShardMessage::SchedulePut(Box::new(request)), now, out);
    }

    /// At the channel's home: keeps the schedule and has the store write it.
    pub(super) fn schedule_put(&mut self, request: SchedulePublish, now: u64, out: &mut Effects) {
        let SchedulePublish {
            channel,
            id,
            priority,
            data,
            not_before,
            from,
            origin,
        } = request;
        let message = StoredMessage {
            id: format!("{id}#{channel}").into(),
            payload: data,
            priority,
            created_ms: now,
            expires_ms: not_before.saturating_add(self.config.delivery.inbox_ttl_ms),
            not_before_ms: not_before,
            from,
        };
        match self.schedules.add(channel.clone(), message.clone()) {
            Err(refusal) => out.answer(origin, Answer::Refused(refusal)),
            Ok(seq) => {
                self.next_schedule_token += 8;
                let token = self.next_schedule_token;
                self.schedules.storing(token, seq, origin);
                let record = Record::SchedulePut {
                    channel,
                    seq,
                    message,
                };
                out.persist(Some(token), vec![record]);
            }
        }
    }

    /// The store wrote (or failed to write) the schedule of `token`.
    pub(super) fn schedule_stored(&mut self, token: u64, ok: bool, out: &mut Effects) {
        match self.schedules.stored(token, ok) {
            Some((origin, Some(id))) => out.answer(origin, Answer::Scheduled(id)),
            Some((origin, None)) => out.answer(origin, Answer::Refused(Refusal::StoreFailed)),
            None => {}
        }
    }

    /// At the channel's home: `by` cancels schedule `id`.
    pub(super) fn cancel_scheduled(
        &mut self,
        channel: Arc<str>,
        id: &str,
        by: Option<Arc<str>>,
        origin: Origin,
        out: &mut Effects,
    ) {
        match self.schedules.cancel(id, by.as_ref()) {
            Ok(seq) => {
                out.persist(None, vec![Record::ScheduleDelete { channel, seq }]);
                out.answer(origin, Answer::Ok);
            }
            Err(refusal) => out.answer(origin, Answer::Refused(refusal)),
        }
    }

    /// Publishes the schedules due at `now` (then deletes them from the store).
    pub(super) fn publish_due(&mut self, now: u64, out: &mut Effects) {
        for (seq, due) in self.schedules.take_due(now) {
            let channel = due.channel;
            let message = due.message;
            let id = message.id.split('#').next().unwrap_or_default();
            if self.history.enabled() {
                // Numbered here (the channel's home); nobody waits for the answer (token 0).
                let sequence = Sequence {
                    channel: channel.clone(),
                    id: id.into(),
                    priority: message.priority,
                    data: message.payload.clone(),
                    msg_id: None,
                    origin: Origin {
                        shard: self.config.shard,
                        token: 0,
                    },
                    born_us: 0,
                };
                self.sequence(sequence, now, out);
            } else {
                let frame = reply::message_raw(&channel, id, message.priority, &message.payload);
                let lz4 = self.config.delivery.lz4_threshold;
                let mut published = Published::new(&channel, message.priority, frame, lz4);
                published.urgent = true;
                out.broadcast(Arc::new(published));
            }
            out.persist(None, vec![Record::ScheduleDelete { channel, seq }]);
        }
    }

    /// Puts back a scheduled publish read from the store at start (its channel's home is this
    /// shard); one already due goes out at the first timeout.
    pub fn restore_schedule(&mut self, channel: Arc<str>, seq: u64, message: StoredMessage) {
        self.schedules.restore(channel, seq, message);
    }
}
