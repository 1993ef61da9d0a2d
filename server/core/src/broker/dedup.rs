//! The dedup window: `msg_id`s seen per destination in the last `dedup.window_s`, so a request
//! repeated (a client retrying after a lost answer) is answered `duplicate` and delivered nowhere.

use std::collections::{HashMap, VecDeque};

/// Keys seen, with when they expire, bounded in number: past `max_entries` the oldest key is
/// forgotten early (the window is shortened, never grown).
#[derive(Debug)]
pub(super) struct Dedup {
    expiry: HashMap<Box<str>, u64>,
    /// Keys in the order they expire (every key gets the same window, so insertion order).
    order: VecDeque<(u64, Box<str>)>,
    max_entries: usize,
    /// Keys forgotten before their time because of `max_entries`.
    evicted: u64,
}

impl Dedup {
    pub(super) fn new(max_entries: usize) -> Self {
        Dedup {
            expiry: HashMap::new(),
            order: VecDeque::new(),
            max_entries,
            evicted: 0,
        }
    }

    /// The key of `msg_id` sent to `destination`.
    pub(super) fn key(destination: &str, msg_id: &str) -> Box<str> {
        format!("{destination}\u{0}{msg_id}").into()
    }

    /// Whether `key` was seen and has not expired at `now`.
    pub(super) fn seen(&self, key: &str, now: u64) -> bool {
        self.expiry.get(key).is_some_and(|&expires| expires > now)
    }

    /// Records `key` until `expires`.
    pub(super) fn insert(&mut self, key: Box<str>, expires: u64, now: u64) {
        self.purge(now);
        if self.max_entries == 0 {
            return;
        }
        while self.expiry.len() >= self.max_entries {
            let Some((_, old)) = self.order.pop_front() else {
                break;
            };
            self.expiry.remove(&old);
            self.evicted += 1;
        }
        if self.expiry.insert(key.clone(), expires).is_none() {
            self.order.push_back((expires, key));
        }
    }

    /// Puts back `key`, read from the store at start, unless it expired meanwhile.
    pub(super) fn restore(&mut self, key: Box<str>, expires: u64, now: u64) {
        if expires > now {
            self.insert(key, expires, now);
        }
    }

    /// Forgets `key` (its write failed: a retry must go through).
    pub(super) fn remove(&mut self, key: &str) {
        self.expiry.remove(key);
    }

    /// Forgets the keys expired at `now`.
    fn purge(&mut self, now: u64) {
        while let Some((expires, _)) = self.order.front() {
            if *expires > now {
                break;
            }
            let (_, key) = self.order.pop_front().expect("present");
            if self.expiry.get(&key).is_some_and(|&e| e <= now) {
                self.expiry.remove(&key);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_seen_within_its_window_and_forgotten_after() {
        let mut dedup = Dedup::new(10);
        let key = Dedup::key("user:bob", "m1");
        assert!(!dedup.seen(&key, 0));
        dedup.insert(key.clone(), 120_000, 0);
        assert!(dedup.seen(&key, 119_999));
        assert!(!dedup.seen(&key, 120_000));
        assert!(
            !dedup.seen(&Dedup::key("user:ann", "m1"), 1),
            "per destination"
        );
        dedup.insert(Dedup::key("user:x", "m2"), 200_000, 150_000);
        assert_eq!(dedup.expiry.len(), 1, "expired keys are purged");
    }

    #[test]
    fn past_max_entries_the_oldest_key_goes_first() {
        let mut dedup = Dedup::new(2);
        for (i, m) in ["a", "b", "c"].into_iter().enumerate() {
            dedup.insert(Dedup::key("d", m), 1000 + i as u64, 0);
        }
        assert!(!dedup.seen(&Dedup::key("d", "a"), 1));
        assert!(dedup.seen(&Dedup::key("d", "b"), 1) && dedup.seen(&Dedup::key("d", "c"), 1));
        assert_eq!(dedup.evicted(), 1);
    }
}
