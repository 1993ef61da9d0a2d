//! Per-connection state: the one source of truth for what a connection is subscribed to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::groups::{GroupKey, Load};
use crate::auth::Permissions;
use crate::ids::{ConnId, IdMap};

/// Who a connection is, as it connects.
#[derive(Debug, Clone)]
pub struct Peer {
    /// It takes `wsedge.v1.lz4` frames.
    pub lz4: bool,
    /// The token's `sub`; `None` when anonymous.
    pub user: Option<Arc<str>>,
    pub permissions: Arc<Permissions>,
}

/// A connection as the broker knows it.
#[derive(Debug)]
pub(super) struct ConnState {
    pub(super) peer: Peer,
    pub(super) subscriptions: HashSet<Box<str>>,
    /// The subscriptions made with `ack` (each has a queue on this shard).
    pub(super) acked: HashSet<Box<str>>,
    /// Message id → the queue that gave it, for what a queue delivered here and the
    /// connection may settle.
    pub(super) acks: HashMap<Arc<str>, Arc<str>>,
    /// Queue groups it is a member of.
    pub(super) groups: HashSet<GroupKey>,
    /// Its load, once it has joined a group.
    pub(super) load: Option<Arc<Load>>,
}

impl ConnState {
    /// Subscriptions and group memberships, counted against `max_subscriptions`.
    pub(super) fn held(&self) -> usize {
        self.subscriptions.len() + self.groups.len()
    }
}

/// This shard's connections.
#[derive(Debug, Default)]
pub(super) struct Conns(IdMap<ConnId, ConnState>);

impl Conns {
    pub(super) fn insert(&mut self, id: ConnId, peer: Peer) {
        let state = ConnState {
            peer,
            subscriptions: HashSet::new(),
            acked: HashSet::new(),
            acks: HashMap::new(),
            groups: HashSet::new(),
            load: None,
        };
        self.0.insert(id, state);
    }

    /// Forgets `id`; returns what it was.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<ConnState> {
        self.0.remove(&id)
    }

    pub(super) fn get(&self, id: ConnId) -> Option<&ConnState> {
        self.0.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: ConnId) -> Option<&mut ConnState> {
        self.0.get_mut(&id)
    }
}
