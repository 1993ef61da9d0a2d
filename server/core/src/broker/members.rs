//! A dense set of subscribers: a delivery copies a slice of ids, and joining or leaving costs
//! O(1) whatever the size.

use crate::ids::{ConnId, IdMap};

/// A subscriber, as deliveries need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Subscriber {
    pub(super) id: ConnId,
    /// Takes the lz4 variants of frames.
    pub(super) lz4: bool,
}

/// Subscribers in no particular order.
#[derive(Debug, Default)]
pub(super) struct Members {
    list: Vec<Subscriber>,
    /// Connection id → its place in `list`.
    index: IdMap<ConnId, usize>,
}

impl Members {
    /// Adds `sub`; false if it was a member already.
    pub(super) fn insert(&mut self, sub: Subscriber) -> bool {
        if self.index.contains_key(&sub.id) {
            return false;
        }
        self.index.insert(sub.id, self.list.len());
        self.list.push(sub);
        true
    }

    /// Removes `id`, if it is a member.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<Subscriber> {
        let at = self.index.remove(&id)?;
        let removed = self.list.swap_remove(at);
        if let Some(moved) = self.list.get(at) {
            self.index.insert(moved.id, at);
        }
        Some(removed)
    }

    pub(super) fn as_slice(&self) -> &[Subscriber] {
        &self.list
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.list.iter().map(|s| s.id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
