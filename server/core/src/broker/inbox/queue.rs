//! What only queues (of acknowledged subscriptions and groups) do: opening and closing,
//! durability, and who holds them.

use std::sync::Arc;

use super::Inboxes;
use crate::broker::refusal::Refusal;
use crate::ids::ConnId;

impl Inboxes {
    /// Opens queue `name` (idempotent): it takes messages from now on; `durable` (set once,
    /// never unset) has them written to the store.
    pub(crate) fn open(&mut self, name: Arc<str>, durable: bool) {
        let inbox = self.inboxes.entry(name).or_default();
        inbox.open = true;
        self.durable += usize::from(durable && !inbox.durable);
        inbox.durable |= durable;
    }

    /// Makes queue `name` durable no more and forgets what it holds; how many messages that
    /// was. Refused when it is not durable.
    pub(crate) fn undurable(&mut self, name: &Arc<str>) -> Result<usize, Refusal> {
        let Some(inbox) = self.inboxes.get_mut(name).filter(|i| i.durable) else {
            return Err(Refusal::NotDurable(name.as_ref().into()));
        };
        inbox.durable = false;
        self.durable -= 1;
        let seqs: Vec<u64> = inbox.entries.keys().copied().collect();
        for &seq in &seqs {
            self.remove(name, seq);
        }
        Ok(seqs.len())
    }

    /// Durable queues open here.
    pub(crate) fn durable_count(&self) -> usize {
        self.durable
    }

    /// Whether `conn` holds queue `name`.
    pub(crate) fn holds(&self, name: &str, conn: ConnId) -> bool {
        let inbox = self.inboxes.get(name);
        inbox.is_some_and(|i| i.conns.iter().any(|h| h.id == conn))
    }

    /// Whether queue `name` has a holder.
    pub(crate) fn has_holders(&self, name: &str) -> bool {
        self.inboxes.get(name).is_some_and(|i| !i.conns.is_empty())
    }

    /// Whether a store confirmation with `token` is for these inboxes: users' tokens are
    /// `8n + 1`, queues' `8n + 2` (durable history's `8n + 3`, schedules' `8n + 4`).
    pub(crate) fn owns_token(&self, token: u64) -> bool {
        token % 8 == self.kind.tag()
    }

    /// Whether queue `name` is open and durable.
    pub(crate) fn is_durable(&self, name: &str) -> bool {
        self.inboxes.get(name).is_some_and(|i| i.open && i.durable)
    }

    /// Closes queue `name`: it takes no more messages and is forgotten once it holds none
    /// and has no holder. With `drop`, what it holds is forgotten now (a plain subscription's
    /// queue, whose one holder left).
    pub(crate) fn close(&mut self, name: &Arc<str>, drop: bool) {
        let Some(inbox) = self.inboxes.get_mut(name) else {
            return;
        };
        inbox.open = false;
        if drop {
            let seqs: Vec<u64> = inbox.entries.keys().copied().collect();
            for seq in seqs {
                self.remove(name, seq);
            }
        }
        self.forget_if_empty(name);
    }
}
