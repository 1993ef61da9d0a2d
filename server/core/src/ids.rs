//! Ids: connections ([`ConnId`]) and published messages ([`MessageIds`]), and the hasher the
//! maps keyed by them use.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A connection, unique in this process: its shard in the top 16 bits, a per-shard sequence
/// number below. Shown to clients as `<shard>-<sequence>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    const SEQ_BITS: u32 = 48;

    /// The `seq`-th connection of shard `shard` (`seq` below 2^48).
    pub fn new(shard: usize, seq: u64) -> Self {
        ConnId((shard as u64) << Self::SEQ_BITS | (seq & ((1 << Self::SEQ_BITS) - 1)))
    }

    /// The shard the connection lives on.
    pub fn shard(self) -> usize {
        (self.0 >> Self::SEQ_BITS) as usize
    }

    fn seq(self) -> u64 {
        self.0 & ((1 << Self::SEQ_BITS) - 1)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.shard(), self.seq())
    }
}

/// A shard's source of message ids, unique across shards and restarts:
/// `<boot>-<shard>-<sequence>` in hex, where `boot` is the start time in unix microseconds.
#[derive(Debug)]
pub struct MessageIds {
    boot: u64,
    shard: usize,
    next: u64,
}

impl MessageIds {
    pub fn new(boot: u64, shard: usize) -> Self {
        MessageIds {
            boot,
            shard,
            next: 0,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> String {
        self.next += 1;
        format!("{:x}-{:x}-{:x}", self.boot, self.shard, self.next)
    }
}

/// The shard that owns what `names` name (a queue group, a channel's presence): FNV-1a of the
/// names (separated), the same on every shard and every start.
pub fn home_shard<'a>(names: impl IntoIterator<Item = &'a str>, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, name) in names.into_iter().enumerate() {
        let separator = (i > 0).then_some(0u8);
        for byte in separator.into_iter().chain(name.bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    (hash % shards.max(1) as u64) as usize
}

/// The hasher of maps keyed by ids: one multiplication (Fibonacci hashing). Ids are not chosen
/// by clients, so they need no protection against collisions crafted on purpose.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A `HashMap` keyed by ids.
pub type IdMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_id_knows_its_shard_and_shows_as_shard_dash_sequence() {
        let id = ConnId::new(3, 17);
        assert_eq!((id.shard(), id.to_string()), (3, "3-17".to_string()));
        let mut ids = MessageIds::new(0xab, 2);
        assert_eq!(
            (ids.next_id(), ids.next_id()),
            ("ab-2-1".into(), "ab-2-2".into())
        );
    }
}
