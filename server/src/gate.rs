//! The gate before authentication: what a connection may hold before it has said who it is.
//!
//! Unauthenticated connections are cheap to open and must stay cheap to hold, or a few idle
//! sockets lock a fleet out. So, in order:
//! 1. **Address validation** (QUIC Retry): a source that has not proven it receives at its
//!    address gets a stateless Retry and holds nothing; spoofed floods cost no slot.
//! 2. **Per-source cap**: one address holds at most [`MAX_PENDING_PER_SOURCE`] slots.
//! 3. **Slots sized by memory**: [`MAX_PENDING_AUTH`] is the pre-authentication memory budget
//!    divided by what one such connection may make the server buffer (its 1 MiB window).
//! 4. **Hello deadline**: handshake and `Hello` must be done within [`HELLO_DEADLINE`], or
//!    the slot is given back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Memory the server may spend on connections that have not authenticated yet.
pub const PRE_AUTH_MEMORY: u64 = 256 * 1024 * 1024;
/// Receive window of a connection before it authenticates: the most it can make us buffer.
pub const PRE_AUTH_WINDOW: u64 = 1024 * 1024;
/// Connections between their first packet and a successful `Hello`, at once.
pub const MAX_PENDING_AUTH: usize = (PRE_AUTH_MEMORY / PRE_AUTH_WINDOW) as usize;
/// Of those, from one source address.
pub const MAX_PENDING_PER_SOURCE: usize = 8;
// Many sources must fit: a handful of busy ones cannot take every slot.
const _: () = assert!(MAX_PENDING_AUTH >= 16 * MAX_PENDING_PER_SOURCE);

/// Time from a connection's first packet to its `Hello` (or `Enroll`).
pub const HELLO_DEADLINE: Duration = Duration::from_secs(2);

/// Slots held by each source address.
#[derive(Debug, Default, Clone)]
pub struct SourceSlots {
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One source's slot; given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    slots: SourceSlots,
    ip: IpAddr,
}

impl SourceSlots {
    /// A slot for `ip`, unless it holds `limit` already.
    pub fn take(&self, ip: IpAddr, limit: usize) -> Option<SourceSlot> {
        let mut held = self.held.lock().expect("source slots poisoned");
        let n = held.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// Slots `ip` holds now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.held
            .lock()
            .expect("source slots poisoned")
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().expect("source slots poisoned");
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_cap_and_gets_slots_back() {
        let slots = SourceSlots::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| slots.take(a, 3).unwrap()).collect();
        assert!(slots.take(a, 3).is_none());
        assert!(slots.take(b, 3).is_some(), "another source is not affected");
        drop(held);
        assert_eq!(slots.held_by(a), 0);
        assert!(slots.take(a, 3).is_some());
    }

    #[test]
    fn slots_follow_the_memory_budget() {
        assert_eq!(MAX_PENDING_AUTH, 256);
    }
}
