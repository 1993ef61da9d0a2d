//! Per-connection state: the one source of truth for what a connection is subscribed to.

use std::collections::HashSet;

use crate::ids::{ConnId, IdMap};

/// A connection as the broker knows it.
#[derive(Debug)]
pub(super) struct ConnState {
    /// It takes `wsedge.v1.lz4` frames.
    pub(super) lz4: bool,
    pub(super) subscriptions: HashSet<Box<str>>,
}

/// This shard's connections.
#[derive(Debug, Default)]
pub(super) struct Conns(IdMap<ConnId, ConnState>);

impl Conns {
    pub(super) fn insert(&mut self, id: ConnId, lz4: bool) {
        let state = ConnState {
            lz4,
            subscriptions: HashSet::new(),
        };
        self.0.insert(id, state);
    }

    /// Forgets `id`; returns the channels it was subscribed to.
    pub(super) fn remove(&mut self, id: ConnId) -> HashSet<Box<str>> {
        self.0
            .remove(&id)
            .map(|state| state.subscriptions)
            .unwrap_or_default()
    }

    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut ConnState> {
        self.0.get_mut(&id)
    }
}
