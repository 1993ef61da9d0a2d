//! The names of queues and which channels they take: a plain acknowledged subscription's queue
//! is `sub:<connection>@<channel>`, an acknowledged group's `group:<group>@<channel>` (a group
//! name has no `@`).

use std::collections::HashMap;
use std::sync::Arc;

use super::groups::GroupKey;
use crate::ids::ConnId;
use crate::topic;

/// The queues this shard keeps, by the channel or pattern they take messages of.
#[derive(Debug, Default)]
pub(super) struct AckIndex {
    exact: HashMap<Arc<str>, Vec<Arc<str>>>,
    patterns: Vec<(Arc<str>, Arc<str>)>,
}

impl AckIndex {
    pub(super) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }

    pub(super) fn add(&mut self, channel: &str, queue: &Arc<str>) {
        if topic::is_pattern(channel) {
            if !self.patterns.iter().any(|(_, q)| q == queue) {
                self.patterns.push((channel.into(), queue.clone()));
            }
        } else {
            let list = self.exact.entry(channel.into()).or_default();
            if !list.contains(queue) {
                list.push(queue.clone());
            }
        }
    }

    pub(super) fn remove(&mut self, channel: &str, queue: &Arc<str>) {
        if topic::is_pattern(channel) {
            self.patterns.retain(|(_, q)| q != queue);
        } else if let Some(list) = self.exact.get_mut(channel) {
            list.retain(|q| q != queue);
            if list.is_empty() {
                self.exact.remove(channel);
            }
        }
    }

    pub(super) fn matching(&self, channel: &str, into: &mut Vec<Arc<str>>) {
        into.extend(self.exact.get(channel).into_iter().flatten().cloned());
        let patterns = self.patterns.iter();
        into.extend(
            patterns
                .filter(|(p, _)| topic::matches(p, channel))
                .map(|(_, q)| q.clone()),
        );
    }
}

/// The queue of connection `id`'s acknowledged subscription to `channel`.
pub(super) fn sub_queue(id: ConnId, channel: &str) -> Arc<str> {
    format!("sub:{id}@{channel}").into()
}

/// The queue of acknowledged group `key`.
pub fn group_queue(key: &GroupKey) -> Arc<str> {
    format!("group:{}@{}", key.group, key.channel).into()
}

/// The group a `group:<group>@<channel>` queue belongs to.
pub fn queue_group(queue: &str) -> Option<GroupKey> {
    let (group, channel) = queue.strip_prefix("group:")?.split_once('@')?;
    Some(GroupKey {
        channel: channel.into(),
        group: group.into(),
    })
}
