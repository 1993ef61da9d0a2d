//! The broker's side of channel history: publishes numbered at the channel's home, subscribes
//! that learn (and recover) their position there, and `history` reads. The logs themselves are
//! in [`super::history`].
//!
//! Order: a channel's home sends its numbered messages and its answers to a shard through that
//! shard's one bounded queue, in order. So an answer (position N, and the messages up to N a
//! subscriber missed) reaches the asking shard after every message up to N and before every
//! message after N: the subscriber is added when the answer arrives and gets each message once.

use std::sync::Arc;

use super::dedup::Dedup;
use super::effects::Effects;
use super::history::Read;
use super::messages::ShardMessage;
use super::presence;
use super::records::{Record, StoredMessage};
use super::refusal::Refusal;
use super::requests::{Answer, HistoryQuery, HistoryWrite, Sequence};
use super::Broker;
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::{frame, reply};

impl Broker {
    /// Whether channels keep history (`[history] size` above 0).
    pub fn history_enabled(&self) -> bool {
        self.history.enabled()
    }

    /// A publish to a channel with history: its home numbers it, then it goes to every shard;
    /// the publisher (`origin`) is answered from there.
    pub fn publish_sequenced(&mut self, message: Sequence, now: u64, out: &mut Effects) {
        let home = presence::home(&message.channel, self.config.shards);
        let message = ShardMessage::Sequence(Box::new(message));
        self.tell(home, message, now, out);
    }

    /// Asks `channel`'s home about its history for connection `id`: with `query.subscribe`,
    /// to subscribe it once the home has said the channel's position, delivering first what
    /// came after `since` when it can (all or nothing); else to read it (which needs the right
    /// to subscribe). Answered to `query.origin`.
    pub fn ask_history(
        &mut self,
        id: ConnId,
        query: HistoryQuery,
        now: u64,
        out: &mut Effects,
    ) -> Result<(), Refusal> {
        let channel = &query.channel;
        match query.subscribe {
            Some(_) => self.check_subscribe(id, channel)?,
            None => {
                if self
                    .conns
                    .get(id)
                    .is_some_and(|c| !c.peer.permissions.may_subscribe(channel))
                {
                    let text = format!("read the history of {channel:?}");
                    return Err(Refusal::Forbidden(text));
                }
            }
        }
        let home = presence::home(channel, self.config.shards);
        self.tell(home, ShardMessage::HistoryQuery(Box::new(query)), now, out);
        Ok(())
    }

    /// Makes room for one more channel when the known ones fill their share of `max_bytes`.
    fn make_room(&mut self) {
        if self.history.crowded() {
            let presence = &self.presence;
            self.history.forget_idle(|channel| presence.has(channel));
        }
    }

    /// The shard that keeps `channel`'s history (its presence home).
    pub fn channel_home(channel: &str, shards: usize) -> usize {
        presence::home(channel, shards)
    }

    /// At the channel's home: a publish seen before with the same `msg_id` (in the dedup
    /// window) is answered `duplicate` and goes nowhere. Without history the message is
    /// published as it is. With history it is numbered, kept and published; with durable
    /// history it is written to the store first: kept, published and confirmed once the store
    /// says so ([`Broker::history_stored`]).
    pub(super) fn sequence(&mut self, message: Sequence, now: u64, out: &mut Effects) {
        let lz4_threshold = self.config.delivery.lz4_threshold;
        let Sequence {
            channel,
            id,
            priority,
            data,
            msg_id,
            origin,
            born_us,
        } = message;
        // The key, kept with a durable history message so that a repeat after a restart is
        // still a duplicate (a publisher resends what it got no `ok` for).
        let mut dedup = None;
        if let Some(msg_id) = &msg_id {
            let key = Dedup::key(&format!("channel:{channel}"), msg_id);
            if self.channel_dedup.seen(&key, now) {
                return out.answer(origin, Answer::Duplicate);
            }
            let expires_ms = now.saturating_add(self.config.delivery.dedup_window_ms);
            self.channel_dedup.insert(key.clone(), expires_ms, now);
            dedup = Some(Record::Dedup { key, expires_ms });
        }
        let with_msg_id = |mut message: Published| {
            message.msg_id = msg_id.clone();
            message.born_us = born_us;
            Arc::new(message)
        };
        if !self.history.enabled() {
            let frame = reply::message_raw(&channel, &id, priority, &data);
            let published = Published::new(&channel, priority, frame, lz4_threshold);
            out.broadcast(with_msg_id(published));
            return out.answer(origin, Answer::Ok);
        }
        self.make_room();
        let build = |epoch: &str, offset| {
            let frame = reply::message_at(&channel, &id, priority, offset, epoch, &data);
            with_msg_id(Published::new(&channel, priority, frame, lz4_threshold))
        };
        if !self.history.durable() {
            // The shard publishes it, here (batched as any publish) and to the other shards.
            out.broadcast(self.history.record(&channel, now, build));
            return out.answer(origin, Answer::Ok);
        }
        let (epoch, offset) = self.history.assign(&channel, now);
        let published = build(&epoch, offset);
        let stored = StoredMessage {
            id: id.into(),
            payload: bytes::Bytes::copy_from_slice(frame::payload_of(&published.frame)),
            priority,
            created_ms: now,
            expires_ms: now.saturating_add(self.history.ttl_ms()),
            not_before_ms: 0,
            from: None,
        };
        let record = Record::HistoryPut {
            channel: channel.clone(),
            offset,
            epoch: epoch.clone(),
            message: stored,
        };
        self.next_history_token += 8;
        let token = self.next_history_token;
        let write = HistoryWrite {
            channel,
            epoch,
            offset,
            message: published,
            origin,
        };
        self.history_writes.insert(token, write);
        out.persist(Some(token), [record].into_iter().chain(dedup).collect());
    }

    /// The store wrote (`ok`) or failed to write the history message of `token`: kept,
    /// published and confirmed, or refused (and the channel starts a new epoch).
    pub(super) fn history_stored(&mut self, token: u64, ok: bool, now: u64, out: &mut Effects) {
        let Some(write) = self.history_writes.remove(&token) else {
            return;
        };
        let HistoryWrite {
            channel,
            epoch,
            offset,
            message,
            origin,
        } = write;
        if ok
            && self
                .history
                .keep(&channel, &epoch, offset, message.clone(), now)
        {
            out.broadcast(message);
            out.answer(origin, Answer::Ok);
        } else {
            self.history.lose(&channel, &epoch);
            out.answer(origin, Answer::Refused(Refusal::StoreFailed));
        }
        self.delete_dropped(out);
    }

    /// Deletes from the store the durable history messages dropped (trimmed, expired, lost).
    pub(super) fn delete_dropped(&mut self, out: &mut Effects) {
        let dropped = self.history.take_dropped();
        if !dropped.is_empty() {
            let deletes = dropped
                .into_iter()
                .map(|(channel, offset)| Record::HistoryDelete { channel, offset })
                .collect();
            out.persist(None, deletes);
        }
    }

    /// Puts back the durable history read from the store at start (of the channels whose home
    /// is this shard).
    pub fn restore_history(
        &mut self,
        messages: Vec<(Arc<str>, u64, Arc<str>, StoredMessage)>,
        now: u64,
    ) {
        let lz4_threshold = self.config.delivery.lz4_threshold;
        let restored = messages
            .into_iter()
            .map(|(channel, offset, epoch, m)| {
                let mut buf = frame::payload_buffer(m.payload.len());
                buf.extend_from_slice(&m.payload);
                let frame = frame::finish(buf, frame::OpCode::Text);
                let published = Published::new(&channel, m.priority, frame, lz4_threshold);
                (channel, offset, epoch, m.created_ms, Arc::new(published))
            })
            .collect();
        self.history.restore(restored, now);
    }

    /// At the channel's home: answers a subscribe's or a reader's question, to its shard.
    pub(super) fn answer_query(&mut self, query: HistoryQuery, now: u64, out: &mut Effects) {
        self.make_room();
        let read = self
            .history
            .read(&query.channel, query.since.as_ref(), query.limit, now);
        let to = query.origin.shard;
        let reply = ShardMessage::HistoryReply(Box::new((query, read)));
        self.tell(to, reply, now, out);
    }

    /// At the asking shard: subscribes (after the messages up to the position, before the ones
    /// after it), delivers what was recovered, and answers.
    pub(super) fn history_reply(&mut self, query: HistoryQuery, read: Read, out: &mut Effects) {
        let Some((id, presence)) = query.subscribe else {
            let answer = Answer::History {
                channel: query.channel,
                read,
            };
            return out.answer(query.origin, answer);
        };
        if self.conns.get(id).is_none() {
            return;
        }
        if let Err(refusal) = self.subscribe(id, &query.channel, presence, out) {
            return out.answer(query.origin, Answer::Refused(refusal));
        }
        for message in &read.messages {
            out.deliver(message, [id]);
        }
        let answer = Answer::Position {
            epoch: read.epoch,
            offset: read.offset,
            recovered: read.recovered,
        };
        out.answer(query.origin, answer);
    }
}
