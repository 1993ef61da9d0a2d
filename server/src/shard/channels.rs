//! A shard's channel index: channel name → this shard's subscribed connections. Never shared
//! with other shards; a publish on another shard arrives through the mailbox and is looked up here.

use std::collections::HashMap;
use std::rc::Rc;

use crate::connection::Conn;

/// Channel → local subscribers (by connection id).
#[derive(Default)]
pub struct Channels {
    map: HashMap<Box<str>, HashMap<u64, Rc<Conn>>>,
}

impl Channels {
    /// Adds `conn` to `channel`; false if it was already subscribed.
    pub fn subscribe(&mut self, channel: &str, conn: &Rc<Conn>) -> bool {
        let subs = match self.map.get_mut(channel) {
            Some(subs) => subs,
            None => self.map.entry(channel.into()).or_default(),
        };
        subs.insert(conn.id, conn.clone()).is_none()
    }

    /// Removes `conn_id` from `channel`; false if it was not subscribed.
    pub fn unsubscribe(&mut self, channel: &str, conn_id: u64) -> bool {
        let Some(subs) = self.map.get_mut(channel) else {
            return false;
        };
        let removed = subs.remove(&conn_id).is_some();
        if subs.is_empty() {
            self.map.remove(channel);
        }
        removed
    }

    /// The subscribers of `channel`.
    pub fn subscribers(&self, channel: &str) -> impl Iterator<Item = &Rc<Conn>> {
        self.map
            .get(channel)
            .into_iter()
            .flat_map(|subs| subs.values())
    }
}
