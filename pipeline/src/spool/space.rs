//! Room in the spool, shared out so that no tenant can take all of it.
//!
//! Every page reserves room for its sealed object before it is read (sized from its declared
//! length), and keeps it until the object is delivered. One tenant whose store is down, or
//! whose devices declare huge pages, would otherwise fill the spool and turn every other
//! tenant away with `Busy`. So a tenant holds at most [`TENANT_SHARE_PERCENT`] of the
//! capacity; as for the whole spool, a tenant holding nothing is always let in, so a page
//! larger than its share still goes through on its own.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

/// The most of the spool's capacity one tenant may hold, in percent.
pub const TENANT_SHARE_PERCENT: u64 = 50;

#[derive(Debug, Default)]
struct Held {
    used: u64,
    by_tenant: HashMap<String, u64>,
}

/// Why room was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// The spool as a whole is full.
    Spool { used: u64 },
    /// The tenant holds its whole share.
    TenantShare { held: u64, share: u64 },
}

#[derive(Debug)]
pub(super) struct Space {
    held: Mutex<Held>,
    pub(super) freed: Notify,
    pub(super) capacity: u64,
}

impl Space {
    pub(super) fn new(capacity: u64) -> Space {
        Space {
            held: Mutex::new(Held::default()),
            freed: Notify::new(),
            capacity,
        }
    }

    fn share(&self) -> u64 {
        self.capacity / 100 * TENANT_SHARE_PERCENT
    }

    /// Takes `bytes` for `tenant` if both the spool and the tenant's share have room.
    pub(super) fn try_take(&self, tenant: &str, bytes: u64) -> Result<(), NoRoom> {
        let mut h = self.held.lock().expect("spool lock");
        let mine = h.by_tenant.get(tenant).copied().unwrap_or(0);
        if h.used != 0 && h.used + bytes > self.capacity {
            return Err(NoRoom::Spool { used: h.used });
        }
        if mine != 0 && mine + bytes > self.share() {
            return Err(NoRoom::TenantShare {
                held: mine,
                share: self.share(),
            });
        }
        h.used += bytes;
        *h.by_tenant.entry(tenant.to_string()).or_insert(0) += bytes;
        Ok(())
    }

    /// Counts `bytes` of a recovered record, whatever the limits: it is on disk already.
    pub(super) fn add(&self, tenant: &str, bytes: u64) {
        let mut h = self.held.lock().expect("spool lock");
        h.used += bytes;
        *h.by_tenant.entry(tenant.to_string()).or_insert(0) += bytes;
    }

    /// Gives back `bytes` of `tenant` and wakes those waiting for room.
    pub(super) fn give_back(&self, tenant: &str, bytes: u64) {
        {
            let mut h = self.held.lock().expect("spool lock");
            h.used = h.used.saturating_sub(bytes);
            if let Some(mine) = h.by_tenant.get_mut(tenant) {
                *mine = mine.saturating_sub(bytes);
                if *mine == 0 {
                    h.by_tenant.remove(tenant);
                }
            }
        }
        self.freed.notify_waiters();
    }

    pub(super) fn used(&self) -> u64 {
        self.held.lock().expect("spool lock").used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tenant_cannot_take_the_whole_spool() {
        let s = Space::new(1000);
        s.try_take("a", 400).unwrap();
        assert_eq!(
            s.try_take("a", 200),
            Err(NoRoom::TenantShare {
                held: 400,
                share: 500
            })
        );
        s.try_take("b", 500).unwrap();
        assert_eq!(s.try_take("c", 200), Err(NoRoom::Spool { used: 900 }));
        s.give_back("a", 400);
        s.try_take("c", 200).unwrap();
        assert_eq!(s.used(), 700);
    }

    #[test]
    fn a_tenant_holding_nothing_gets_one_page_of_any_size_when_the_spool_is_empty() {
        let s = Space::new(1000);
        s.try_take("a", 5000).unwrap();
        s.give_back("a", 5000);
        assert_eq!(s.used(), 0);
        s.try_take("b", 100).unwrap();
        // The spool is not empty now: a page bigger than the rest waits.
        assert!(s.try_take("a", 950).is_err());
    }
}
