//! Deliveries and deadlines: what an inbox sends now, and what its timers do.

use std::sync::Arc;

use super::entry::State;
use super::{Inboxes, Kind, Route};
use crate::broker::effects::Effects;
use crate::broker::messages::ShardMessage;
use crate::broker::records::DeadReason;
use crate::ids::ConnId;
use crate::message::Published;

impl Inboxes {
    /// Handles the deadlines passed at `now`: expiries, ack timeouts, redeliveries.
    pub(crate) fn timeout(&mut self, now: u64, out: &mut Effects) {
        let mut touched: Vec<Arc<str>> = Vec::new();
        while let Some((at, _, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let (at, name, seq) = self.timers.pop_first().expect("present");
            let Some(entry) = self.entry_mut(&name, seq) else {
                continue;
            };
            let (state, attempts) = (entry.state, entry.attempts);
            if now >= entry.expires_ms {
                if state != State::Storing {
                    self.dead_letter(&name, seq, DeadReason::Expired, None, now, out);
                }
            } else if matches!(state, State::InFlight { due, .. } if due == at) {
                if attempts >= self.config.max_deliver {
                    self.dead_letter(&name, seq, DeadReason::MaxDeliver, None, now, out);
                } else {
                    let not_before = now.saturating_add(self.backoff(attempts));
                    self.make_ready(&name, seq, not_before, now);
                }
            } else if state == (State::Ready { not_before: at }) {
                if let Some(inbox) = self.inboxes.get_mut(&name) {
                    inbox.ready.insert(seq);
                }
            } else {
                continue;
            }
            if !touched.contains(&name) {
                touched.push(name);
            }
        }
        for name in touched {
            self.pump(&name, now, out);
        }
    }

    /// Delivers what inbox `name` may send now: the ready messages, in order, while fewer than
    /// `max_pending` are unacknowledged (by the user; by the holder picked, in a queue).
    pub(super) fn pump(&mut self, name: &Arc<str>, now: u64, out: &mut Effects) {
        let Some(inbox) = self.inboxes.get_mut(name) else {
            return;
        };
        if inbox.conns.is_empty() {
            return;
        }
        let max = self.config.max_pending;
        let due = now.saturating_add(self.config.wait_ms);
        let mut gone = Vec::new();
        for &seq in &inbox.ready {
            let Some(entry) = inbox.entries.get_mut(&seq) else {
                gone.push(seq);
                continue;
            };
            match entry.state {
                State::Ready { not_before } if not_before <= now => {}
                // Not ready after all (its state moved on): no longer in the set.
                _ => {
                    gone.push(seq);
                    continue;
                }
            }
            let to = match self.kind {
                Kind::Users if inbox.in_flight >= max => break,
                Kind::Users => None,
                Kind::Queues => {
                    // The holder with the fewest in flight, starting the search in turn.
                    let len = inbox.conns.len();
                    let start = inbox.next % len;
                    let pick = (0..len)
                        .map(|i| (start + i) % len)
                        .min_by_key(|&i| inbox.conns[i].in_flight)
                        .filter(|&i| inbox.conns[i].in_flight < max);
                    match pick {
                        Some(i) => Some(i),
                        None => break,
                    }
                }
            };
            gone.push(seq);
            if let Some(at) = entry.state.timer() {
                self.timers.remove(&(at, name.clone(), seq));
            }
            entry.attempts += 1;
            if entry.attempts > 1 {
                self.counts.redeliveries += 1;
            }
            self.timers.insert((due, name.clone(), seq));
            let mut message =
                Published::new("", entry.priority, entry.frame(), self.config.lz4_threshold);
            // A scheduled message at its time goes out at once.
            message.urgent = entry.not_before_ms > 0 && entry.attempts == 1;
            let message = Arc::new(message);
            let Some(i) = to else {
                inbox.in_flight += 1;
                entry.state = State::InFlight { due, to: None };
                for holder in &inbox.conns {
                    deliver(self.shard, holder.id, &message, out);
                }
                continue;
            };
            let holder = &mut inbox.conns[i];
            holder.in_flight += 1;
            inbox.next = i + 1;
            let to = holder.id;
            entry.state = State::InFlight { due, to: Some(to) };
            if !entry.given.contains(&to) {
                entry.given.push(to);
            }
            self.routes.push(Route::Given {
                to,
                id: entry.id.clone(),
                queue: name.clone(),
                message,
            });
        }
        for seq in gone {
            inbox.ready.remove(&seq);
        }
    }

    /// The wait before redelivering a message delivered `attempts` times.
    fn backoff(&self, attempts: u32) -> u64 {
        let steps = &self.config.backoff_ms;
        let step = (attempts as usize)
            .saturating_sub(1)
            .min(steps.len().saturating_sub(1));
        steps.get(step).copied().unwrap_or(0)
    }

    /// Makes message `seq` wait until `not_before` (taking it out of flight); ready at once
    /// when that is not after `now`.
    pub(super) fn make_ready(&mut self, name: &Arc<str>, seq: u64, not_before: u64, now: u64) {
        let Some(inbox) = self.inboxes.get_mut(name) else {
            return;
        };
        let Some(entry) = inbox.entries.get_mut(&seq) else {
            return;
        };
        let state = entry.state;
        entry.state = State::Ready { not_before };
        if let Some(at) = state.timer() {
            self.timers.remove(&(at, name.clone(), seq));
        }
        if not_before > now {
            self.timers.insert((not_before, name.clone(), seq));
        } else {
            inbox.ready.insert(seq);
        }
        if let State::InFlight { to, .. } = state {
            self.landed(name, to);
        }
    }

    /// A delivery (to holder `to`, in a queue) is no longer in flight.
    pub(super) fn landed(&mut self, name: &Arc<str>, to: Option<ConnId>) {
        let Some(inbox) = self.inboxes.get_mut(name) else {
            return;
        };
        match to {
            None => inbox.in_flight -= 1,
            Some(to) => {
                if let Some(holder) = inbox.conns.iter_mut().find(|h| h.id == to) {
                    holder.in_flight -= 1;
                }
            }
        }
    }
}

/// Delivers `message` to `to`: at once on this shard (`shard`), else through `to`'s shard.
fn deliver(shard: usize, to: ConnId, message: &Arc<Published>, out: &mut Effects) {
    if to.shard() == shard {
        out.deliver(message, [to]);
    } else {
        let message = message.clone();
        let deliver = ShardMessage::Deliver {
            to,
            message,
            route: None,
        };
        out.send_to_shard(to.shard(), deliver);
    }
}
