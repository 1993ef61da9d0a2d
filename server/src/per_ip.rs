//! Per-client-address limits (`server.max_connections_per_ip`, `server.new_connections_per_ip_per_s`),
//! shared by all shards without a lock: a fixed table of atomic counters indexed by a hash of the
//! address. Two addresses that hash alike share one count, so the table is large
//! ([`SLOTS`]) and a collision can only make a limit stricter, never looser.
//!
//! IPv6 addresses are counted by their /64 prefix, which is what one client usually holds.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Counters in the table (about 768 KiB).
pub const SLOTS: usize = 1 << 16;

/// Why a new connection from an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections_per_ip` are open.
    TooMany,
    /// `new_connections_per_ip_per_s` were opened this second.
    TooFast,
}

#[derive(Debug, Default)]
struct Slot {
    open: AtomicU32,
    /// The current one-second window (high 32 bits: unix second) and the connections opened in it
    /// (low 32 bits).
    window: AtomicU64,
}

/// The counters and the limits they enforce (0: no limit).
#[derive(Debug)]
pub struct PerIp {
    slots: Box<[Slot]>,
    hasher: std::collections::hash_map::RandomState,
    max_open: u32,
    max_new_per_s: u32,
}

impl PerIp {
    pub fn new(max_open: u32, max_new_per_s: u32) -> Self {
        let slots = if max_open == 0 && max_new_per_s == 0 {
            Vec::new()
        } else {
            (0..SLOTS).map(|_| Slot::default()).collect()
        };
        PerIp {
            slots: slots.into_boxed_slice(),
            hasher: Default::default(),
            max_open,
            max_new_per_s,
        }
    }

    /// Admits a new connection from `ip` at unix second `now_s`, counting it open until the
    /// guard drops.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now_s: u64) -> Result<IpGuard, Refusal> {
        if self.slots.is_empty() {
            return Ok(IpGuard(None));
        }
        let index = self.slot_of(ip);
        let slot = &self.slots[index];
        if self.max_new_per_s > 0 && !admit_in_window(&slot.window, now_s, self.max_new_per_s) {
            return Err(Refusal::TooFast);
        }
        let open = slot.open.fetch_add(1, Ordering::AcqRel);
        if self.max_open > 0 && open >= self.max_open {
            slot.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooMany);
        }
        Ok(IpGuard(Some((self.clone(), index))))
    }

    fn slot_of(&self, ip: IpAddr) -> usize {
        let key = match ip {
            IpAddr::V4(v4) => u128::from(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u128::from(v4.to_bits()),
                None => v6.to_bits() >> 64 << 64 | 1,
            },
        };
        let mut hasher = self.hasher.build_hasher();
        key.hash(&mut hasher);
        (std::hash::Hasher::finish(&hasher) as usize) % self.slots.len()
    }
}

/// Counts one connection in a one-second window unless `max` were counted in it already.
fn admit_in_window(window: &AtomicU64, now_s: u64, max: u32) -> bool {
    let second = now_s & u64::from(u32::MAX);
    let mut current = window.load(Ordering::Acquire);
    loop {
        let count = if current >> 32 == second {
            current & u64::from(u32::MAX)
        } else {
            0
        };
        if count >= u64::from(max) {
            return false;
        }
        let next = second << 32 | (count + 1);
        match window.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

/// One open connection counted for its address; uncounted on drop.
#[derive(Debug)]
pub struct IpGuard(Option<(Arc<PerIp>, usize)>);

impl Drop for IpGuard {
    fn drop(&mut self) {
        if let Some((table, index)) = &self.0 {
            table.slots[*index].open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn open_connections_are_capped_and_freed_on_drop() {
        let table = Arc::new(PerIp::new(2, 0));
        let a = table.admit(A, 0).unwrap();
        let _b = table.admit(A, 0).unwrap();
        assert_eq!(table.admit(A, 0).unwrap_err(), Refusal::TooMany);
        drop(a);
        assert!(table.admit(A, 0).is_ok());
    }

    #[test]
    fn new_connections_are_capped_per_second() {
        let table = Arc::new(PerIp::new(0, 3));
        let guards: Vec<_> = (0..3).map(|_| table.admit(A, 100).unwrap()).collect();
        assert_eq!(table.admit(A, 100).unwrap_err(), Refusal::TooFast);
        drop(guards);
        assert_eq!(
            table.admit(A, 100).unwrap_err(),
            Refusal::TooFast,
            "closing does not help"
        );
        assert!(table.admit(A, 101).is_ok(), "a new second does");
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_prefix() {
        let table = Arc::new(PerIp::new(1, 0));
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_prefix: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _g = table.admit(one, 0).unwrap();
        assert_eq!(table.admit(same_prefix, 0).unwrap_err(), Refusal::TooMany);
        // Another /64 shares the slot only by a (1 in 65,536) hash collision.
        let _ = table.admit(other, 0);
    }

    #[test]
    fn no_limits_cost_no_table() {
        let table = Arc::new(PerIp::new(0, 0));
        assert!(table.slots.is_empty());
        assert!((0..10).all(|_| table.admit(A, 0).is_ok()));
    }
}
