//! The broker's side of channel history: publishes numbered at the channel's home, subscribes
//! that learn (and recover) their position there, and `history` reads. The logs themselves are
//! in [`super::history`].
//!
//! Order: a channel's home sends its numbered messages and its answers to a shard through that
//! shard's one bounded queue, in order. So an answer (position N, and the messages up to N a
//! subscriber missed) reaches the asking shard after every message up to N and before every
//! message after N: the subscriber is added when the answer arrives and gets each message once.

use std::sync::Arc;

use super::effects::Effects;
use super::history::Read;
use super::messages::ShardMessage;
use super::presence;
use super::refusal::Refusal;
use super::requests::{Answer, HistoryQuery, Sequence};
use super::Broker;
use crate::ids::ConnId;
use crate::message::Published;
use crate::protocol::reply;

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
        self.hand_to(home, message, now, out);
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
        self.hand_to(home, ShardMessage::HistoryQuery(Box::new(query)), now, out);
        Ok(())
    }

    /// Hands `message` to shard `shard`'s broker (this one, at once).
    fn hand_to(&mut self, shard: usize, message: ShardMessage, now: u64, out: &mut Effects) {
        if shard == self.config.shard {
            self.receive(message, now, out);
        } else {
            out.send_to_shard(shard, message);
        }
    }

    /// Makes room for one more channel when the known ones fill their share of `max_bytes`.
    fn make_room(&mut self) {
        if self.history.crowded() {
            let presence = &self.presence;
            self.history.forget_idle(|channel| presence.has(channel));
        }
    }

    /// At the channel's home: numbers, keeps and publishes a message.
    pub(super) fn sequence(&mut self, message: Sequence, now: u64, out: &mut Effects) {
        self.make_room();
        let lz4_threshold = self.config.delivery.lz4_threshold;
        let Sequence {
            channel,
            id,
            priority,
            data,
            origin,
        } = message;
        let published = self.history.record(&channel, now, |epoch, offset| {
            let frame = reply::message_at(&channel, &id, priority, offset, epoch, &data);
            Arc::new(Published::new(&channel, priority, frame, lz4_threshold))
        });
        // The shard publishes it, here (batched as any publish) and to the other shards.
        out.broadcast(published);
        out.answer(origin, Answer::Ok);
    }

    /// At the channel's home: answers a subscribe's or a reader's question, to its shard.
    pub(super) fn answer_query(&mut self, query: HistoryQuery, now: u64, out: &mut Effects) {
        self.make_room();
        let read = self
            .history
            .read(&query.channel, query.since.as_ref(), query.limit, now);
        let to = query.origin.shard;
        let reply = ShardMessage::HistoryReply(Box::new((query, read)));
        self.hand_to(to, reply, now, out);
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
