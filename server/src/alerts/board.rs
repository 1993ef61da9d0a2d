//! What the monitor thread publishes each second for `/api/stats`, `/api/alerts`, the
//! dashboard and `/metrics`: the last [`POINTS`] seconds of figures (as JSON) and every alert
//! rule's state. Readers (on the shards) never wait: the monitor swaps in a new snapshot.

use std::collections::VecDeque;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::status::Status;

/// Seconds of figures kept: five minutes.
pub const POINTS: usize = 300;

#[derive(Debug, Default, Clone)]
struct Snapshot {
    /// (Unix ms, the second's figures as a JSON object), oldest first.
    points: VecDeque<(u64, Arc<str>)>,
    statuses: Vec<Status>,
}

/// The monitor's latest figures and alert states.
#[derive(Debug, Default)]
pub struct Board {
    snapshot: ArcSwap<Snapshot>,
}

impl Board {
    /// Adds one second's figures and the rules' states (only the monitor calls this).
    pub fn publish(&self, at_ms: u64, point: String, statuses: Vec<Status>) {
        let mut next = Snapshot::clone(&self.snapshot.load());
        if next.points.len() == POINTS {
            next.points.pop_front();
        }
        next.points.push_back((at_ms, point.into()));
        next.statuses = statuses;
        self.snapshot.store(Arc::new(next));
    }

    /// Sets the rules' states (at start, before the first second's figures).
    pub fn set_statuses(&self, statuses: Vec<Status>) {
        let mut next = Snapshot::clone(&self.snapshot.load());
        next.statuses = statuses;
        self.snapshot.store(Arc::new(next));
    }

    /// The figures of the seconds after `after_ms`, as a JSON array.
    pub fn points_after(&self, after_ms: u64) -> String {
        let snapshot = self.snapshot.load();
        let points: Vec<&str> = snapshot
            .points
            .iter()
            .filter(|(at, _)| *at > after_ms)
            .map(|(_, p)| &**p)
            .collect();
        format!("[{}]", points.join(","))
    }

    /// Every rule's state.
    pub fn statuses(&self) -> Vec<Status> {
        self.snapshot.load().statuses.clone()
    }
}
