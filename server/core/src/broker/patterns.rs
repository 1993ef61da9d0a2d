//! Pattern subscriptions on this shard (`news.*`, `news.>`), in a token trie like nats-server's
//! sublist: a publish walks one branch per token (the literal one and the `*` one), so its cost
//! grows with the channel's depth and the wildcards on its path, not with the number of patterns.

use std::collections::HashMap;

use super::members::{Members, Subscriber};
use crate::ids::ConnId;

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Patterns that end at this node.
    here: Members,
    /// Patterns that end with `>` after this node: they match one or more further tokens.
    rest: Members,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.here.is_empty()
            && self.rest.is_empty()
    }

    fn matching(&self, tokens: &[&str], out: &mut Vec<ConnId>) {
        let Some((first, more)) = tokens.split_first() else {
            out.extend(self.here.ids());
            return;
        };
        out.extend(self.rest.ids());
        if let Some(child) = self.literal.get(*first) {
            child.matching(more, out);
        }
        if let Some(star) = &self.star {
            star.matching(more, out);
        }
    }

    /// Removes `id` from the pattern at `tokens`; prunes emptied nodes.
    fn remove(&mut self, tokens: &[&str], id: ConnId) {
        match tokens {
            [] => {
                self.here.remove(id);
            }
            [">"] => {
                self.rest.remove(id);
            }
            ["*", more @ ..] => {
                if let Some(star) = &mut self.star {
                    star.remove(more, id);
                    if star.is_empty() {
                        self.star = None;
                    }
                }
            }
            [literal, more @ ..] => {
                if let Some(child) = self.literal.get_mut(*literal) {
                    child.remove(more, id);
                    if child.is_empty() {
                        self.literal.remove(*literal);
                    }
                }
            }
        }
    }
}

/// This shard's pattern subscriptions.
#[derive(Debug, Default)]
pub(super) struct Patterns {
    root: Node,
    count: usize,
}

impl Patterns {
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Subscribes `sub` to the (checked) `pattern`.
    pub(super) fn insert(&mut self, pattern: &str, sub: Subscriber) {
        let mut node = &mut self.root;
        let mut tokens = pattern.split('.').peekable();
        while let Some(token) = tokens.next() {
            if token == ">" && tokens.peek().is_none() {
                self.count += usize::from(node.rest.insert(sub));
                return;
            }
            node = match token {
                "*" => node.star.get_or_insert_with(Box::default),
                literal => node.literal.entry(literal.into()).or_default(),
            };
        }
        self.count += usize::from(node.here.insert(sub));
    }

    /// Unsubscribes `id` from `pattern`.
    pub(super) fn remove(&mut self, pattern: &str, id: ConnId) {
        let tokens: Vec<&str> = pattern.split('.').collect();
        self.root.remove(&tokens, id);
        self.count = self.count.saturating_sub(1);
    }

    /// Appends to `out` the subscribers of every pattern matching `channel` (a connection
    /// subscribed to several such patterns appears once per pattern).
    pub(super) fn matching(&self, channel: &str, out: &mut Vec<ConnId>) {
        if self.is_empty() {
            return;
        }
        let tokens: Vec<&str> = channel.split('.').collect();
        self.root.matching(&tokens, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(n: u64) -> Subscriber {
        Subscriber {
            id: ConnId::new(0, n),
            lz4: false,
        }
    }

    fn matching(patterns: &Patterns, channel: &str) -> Vec<u64> {
        let mut out = Vec::new();
        patterns.matching(channel, &mut out);
        let mut ids: Vec<u64> = out
            .iter()
            .map(|id| id.to_string()[2..].parse().unwrap())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn the_trie_finds_what_topic_matches_finds() {
        let list = [
            "news.*", "news.>", ">", "*", "*.eu", "a.*.c", "news.eu", "*.*.>",
        ];
        let mut patterns = Patterns::default();
        for (n, pattern) in list.iter().enumerate() {
            patterns.insert(pattern, sub(n as u64));
        }
        for channel in [
            "news",
            "news.eu",
            "news.eu.fr",
            "a.b.c",
            "x.eu",
            "a.b.d",
            "q",
        ] {
            let expected: Vec<u64> = (0..list.len() as u64)
                .filter(|&n| crate::topic::matches(list[n as usize], channel))
                .collect();
            assert_eq!(matching(&patterns, channel), expected, "{channel}");
        }
    }

    #[test]
    fn removing_prunes_and_leaves_the_others() {
        let mut patterns = Patterns::default();
        patterns.insert("news.*", sub(1));
        patterns.insert("news.*", sub(2));
        patterns.insert("news.>", sub(3));
        patterns.remove("news.*", ConnId::new(0, 1));
        assert_eq!(matching(&patterns, "news.eu"), [2, 3]);
        patterns.remove("news.*", ConnId::new(0, 2));
        patterns.remove("news.>", ConnId::new(0, 3));
        assert!(patterns.is_empty() && patterns.root.is_empty());
    }
}
