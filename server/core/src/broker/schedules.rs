//! Publishes scheduled for later (`deliver_at` / `delay_ms` on a `publish`), kept by their
//! channel's home shard until they are due, in the store meanwhile.
//!
//! A schedule is confirmed (`"scheduled":"<id>#<channel>"`) once stored; due, it is published
//! like any publish and deleted from the store (after it is published: a crash between the two
//! publishes it again after the restart, at least once). Its publisher's user alone may cancel
//! it before then. Bounded by `inbox.max_messages` per channel and this shard's share of
//! `inbox.max_bytes`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::config::DeliveryConfig;
use super::records::StoredMessage;
use super::refusal::Refusal;
use super::requests::Origin;
use crate::ids::IdMap;

/// One scheduled publish.
#[derive(Debug)]
pub(super) struct Scheduled {
    pub(super) channel: Arc<str>,
    /// Its id is `message.id` (`<message id>#<channel>`); its payload is the `data` JSON.
    pub(super) message: StoredMessage,
    /// Confirmed by the store (until then it is neither due nor cancellable).
    stored: bool,
}

/// The scheduled publishes of the channels whose home is this shard.
#[derive(Debug)]
pub(super) struct Schedules {
    config: DeliveryConfig,
    entries: BTreeMap<u64, Scheduled>,
    /// (due, seq), soonest first.
    due: BTreeSet<(u64, u64)>,
    by_id: HashMap<Arc<str>, u64>,
    per_channel: HashMap<Arc<str>, usize>,
    bytes: usize,
    next_seq: u64,
    /// Writes waiting for the store: token → (seq, who waits).
    storing: IdMap<u64, (u64, Origin)>,
}

impl Schedules {
    pub(super) fn new(config: DeliveryConfig) -> Self {
        Schedules {
            config,
            entries: BTreeMap::new(),
            due: BTreeSet::new(),
            by_id: HashMap::new(),
            per_channel: HashMap::new(),
            bytes: 0,
            next_seq: 1,
            storing: IdMap::default(),
        }
    }

    /// Keeps `message` for `channel` until `message.not_before_ms`: its sequence number (for
    /// the store), or why not.
    pub(super) fn add(
        &mut self,
        channel: Arc<str>,
        message: StoredMessage,
    ) -> Result<u64, Refusal> {
        let max = self.config.inbox_max_messages;
        let count = self.per_channel.get(&channel).copied().unwrap_or(0);
        if count >= max {
            let text =
                format!("channel {channel:?} has {max} scheduled publishes (inbox.max_messages)");
            return Err(Refusal::InboxFull(text));
        }
        if self.bytes + message.payload.len() > self.config.inbox_max_bytes {
            let text = "the schedules hold inbox.max_bytes; retry later".to_string();
            return Err(Refusal::InboxFull(text));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(seq, channel, message, false);
        Ok(seq)
    }

    /// Keeps it; a stored one waits for its time (an unstored one first for the store).
    fn insert(&mut self, seq: u64, channel: Arc<str>, message: StoredMessage, stored: bool) {
        self.bytes += message.payload.len();
        *self.per_channel.entry(channel.clone()).or_default() += 1;
        if stored {
            self.due.insert((message.not_before_ms, seq));
        }
        self.by_id.insert(message.id.clone(), seq);
        let entry = Scheduled {
            channel,
            message,
            stored,
        };
        self.entries.insert(seq, entry);
    }

    /// Notes that the write of `seq` is confirmed by `token`, to be answered to `origin`.
    pub(super) fn storing(&mut self, token: u64, seq: u64, origin: Origin) {
        self.storing.insert(token, (seq, origin));
    }

    /// The store confirmed (or failed) the write made with `token`: who waits, and the
    /// schedule's id when it is kept (a failed one is forgotten).
    pub(super) fn stored(&mut self, token: u64, ok: bool) -> Option<(Origin, Option<Arc<str>>)> {
        let (seq, origin) = self.storing.remove(&token)?;
        if !ok {
            self.remove(seq);
            return Some((origin, None));
        }
        let entry = self.entries.get_mut(&seq)?;
        entry.stored = true;
        self.due.insert((entry.message.not_before_ms, seq));
        Some((origin, Some(entry.message.id.clone())))
    }

    /// `by` cancels schedule `id`: only its publisher, and only a stored one not yet due.
    pub(super) fn cancel(&mut self, id: &str, by: Option<&Arc<str>>) -> Result<u64, Refusal> {
        let found = self.by_id.get(id).copied().filter(|seq| {
            self.entries.get(seq).is_some_and(|e| {
                e.stored && e.message.from.is_some() && e.message.from.as_ref() == by
            })
        });
        let Some(seq) = found else {
            return Err(Refusal::UnknownMessage(id.into()));
        };
        self.remove(seq);
        Ok(seq)
    }

    /// When the next one is due.
    pub(super) fn next_timeout(&self) -> Option<u64> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Takes the stored schedules due at `now`, soonest first, with their seqs.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<(u64, Scheduled)> {
        let mut due = Vec::new();
        while let Some(&(at, seq)) = self.due.first() {
            if at > now {
                break;
            }
            due.extend(self.remove(seq).map(|e| (seq, e)));
        }
        due
    }

    /// Puts back a schedule read from the store at start.
    pub(super) fn restore(&mut self, channel: Arc<str>, seq: u64, message: StoredMessage) {
        self.next_seq = self.next_seq.max(seq + 1);
        self.insert(seq, channel, message, true);
    }

    fn remove(&mut self, seq: u64) -> Option<Scheduled> {
        let entry = self.entries.remove(&seq)?;
        self.due.remove(&(entry.message.not_before_ms, seq));
        self.by_id.remove(&entry.message.id);
        self.bytes -= entry.message.payload.len();
        if let Some(n) = self.per_channel.get_mut(&entry.channel) {
            *n -= 1;
            if *n == 0 {
                self.per_channel.remove(&entry.channel);
            }
        }
        Some(entry)
    }
}
