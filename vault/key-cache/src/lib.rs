//! Unwrapped tenant keys held in memory between trips to the key vault.
//!
//! A KMS or HSM round trip per page would cap ingest, so the keyring keeps each tenant's
//! unwrapped intermediate keys here for a bounded time and number of uses. The hard part is
//! not the bound but the race with a shred: a reader that missed the cache, went to the
//! vault and came back with keys must not put them into the cache after the tenant was
//! shredded (or its keys rotated or retired) while it was away, or a destroyed key would
//! keep being served. So every miss hands out a [`Ticket`] carrying the tenant's
//! *generation*; [`KeyCache::shred`] and [`KeyCache::invalidate`] bump the generation, and
//! [`KeyCache::fill`] refuses a ticket from an older one.
//!
//! The crate has no dependencies so that `RUSTFLAGS="--cfg loom" cargo test -p
//! quire-key-cache --test loom` model-checks that protocol on its own.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashMap;

#[cfg(loom)]
use loom::sync::{
    atomic::{AtomicU64, Ordering},
    RwLock,
};
#[cfg(not(loom))]
use std::sync::{
    atomic::{AtomicU64, Ordering},
    RwLock,
};

/// How long and how often a cached value may be served before it is fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Age limit, in the caller's clock units (the keyring uses milliseconds).
    pub max_age: u64,
    /// Uses before the value is fetched again.
    pub max_uses: u64,
}

/// Proof that a lookup missed, naming the generation it missed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a ticket is how fetched keys get into the cache"]
pub struct Ticket {
    generation: u64,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<T> {
    /// A fresh value answered.
    Hit(T),
    /// Nothing fresh (or the value lacked what was asked): fetch, then [`KeyCache::fill`].
    Miss(Ticket),
    /// The tenant was shredded: nothing is served or stored for it again.
    Shredded,
}

struct Entry<V> {
    value: V,
    born: u64,
    uses: AtomicU64,
}

struct Slot<V> {
    generation: u64,
    shredded: bool,
    entry: Option<Entry<V>>,
}

impl<V> Default for Slot<V> {
    fn default() -> Self {
        Slot {
            generation: 0,
            shredded: false,
            entry: None,
        }
    }
}

/// Values per tenant, bounded by [`Bounds`], emptied for good by a shred.
pub struct KeyCache<V> {
    bounds: Bounds,
    slots: RwLock<HashMap<String, Slot<V>>>,
}

impl<V> std::fmt::Debug for KeyCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values: they are keys.
        f.debug_struct("KeyCache")
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl<V> KeyCache<V> {
    /// An empty cache.
    pub fn new(bounds: Bounds) -> Self {
        KeyCache {
            bounds,
            slots: RwLock::new(HashMap::new()),
        }
    }

    /// Looks `tenant` up at time `now`; `pick` takes what the caller wants from the value
    /// (`None`: the value lacks it, which counts as a miss).
    pub fn get<T>(&self, tenant: &str, now: u64, pick: impl FnOnce(&V) -> Option<T>) -> Lookup<T> {
        let slots = self.slots.read().expect("key cache lock poisoned");
        let Some(slot) = slots.get(tenant) else {
            return Lookup::Miss(Ticket { generation: 0 });
        };
        if slot.shredded {
            return Lookup::Shredded;
        }
        let miss = Lookup::Miss(Ticket {
            generation: slot.generation,
        });
        let Some(entry) = &slot.entry else {
            return miss;
        };
        let used = entry.uses.fetch_add(1, Ordering::Relaxed);
        if used >= self.bounds.max_uses || now.saturating_sub(entry.born) >= self.bounds.max_age {
            return miss;
        }
        match pick(&entry.value) {
            Some(t) => Lookup::Hit(t),
            None => miss,
        }
    }

    /// Stores a value fetched after the miss that gave `ticket`. Refused (returns `false`,
    /// and the value is dropped) if the tenant was shredded or invalidated since: what was
    /// fetched may already be destroyed or out of date.
    pub fn fill(&self, tenant: &str, ticket: Ticket, now: u64, value: V) -> bool {
        let mut slots = self.slots.write().expect("key cache lock poisoned");
        let slot = slots.entry(tenant.to_string()).or_default();
        if slot.shredded || slot.generation != ticket.generation {
            return false;
        }
        slot.entry = Some(Entry {
            value,
            born: now,
            uses: AtomicU64::new(0),
        });
        true
    }

    /// Drops the tenant's value and turns away fills of lookups made before (after a
    /// rotation or retirement changed what the vault holds).
    pub fn invalidate(&self, tenant: &str) {
        let mut slots = self.slots.write().expect("key cache lock poisoned");
        let slot = slots.entry(tenant.to_string()).or_default();
        slot.generation += 1;
        slot.entry = None;
    }

    /// Drops the tenant's value for good: from the moment this returns, no lookup answers
    /// and no fill is taken, whenever its fetch began.
    pub fn shred(&self, tenant: &str) {
        let mut slots = self.slots.write().expect("key cache lock poisoned");
        let slot = slots.entry(tenant.to_string()).or_default();
        slot.generation += 1;
        slot.shredded = true;
        slot.entry = None;
    }

    /// Whether the tenant was shredded in this process.
    pub fn is_shredded(&self, tenant: &str) -> bool {
        let slots = self.slots.read().expect("key cache lock poisoned");
        slots.get(tenant).is_some_and(|s| s.shredded)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        max_age: 1000,
        max_uses: 3,
    };

    fn hit(c: &KeyCache<u32>, now: u64) -> Option<u32> {
        match c.get("acme", now, |v| Some(*v)) {
            Lookup::Hit(v) => Some(v),
            _ => None,
        }
    }

    fn ticket(c: &KeyCache<u32>) -> Ticket {
        match c.get("acme", 0, |_| None::<()>) {
            Lookup::Miss(t) => t,
            other => panic!("expected a miss, got {other:?}"),
        }
    }

    #[test]
    fn a_fill_answers_until_its_age_or_uses_run_out() {
        let c = KeyCache::new(BOUNDS);
        let t = ticket(&c);
        assert!(c.fill("acme", t, 0, 7));
        assert_eq!(hit(&c, 10), Some(7));
        assert_eq!(hit(&c, 999), Some(7));
        assert_eq!(hit(&c, 20), Some(7));
        assert_eq!(hit(&c, 20), None, "three uses, then fetched again");
        let t = ticket(&c);
        assert!(c.fill("acme", t, 100, 8));
        assert_eq!(hit(&c, 1099), Some(8));
        assert_eq!(hit(&c, 1100), None, "too old");
    }

    #[test]
    fn a_fetch_that_began_before_a_shred_is_not_cached_after_it() {
        let c = KeyCache::new(BOUNDS);
        let before = ticket(&c);
        c.shred("acme");
        assert!(!c.fill("acme", before, 0, 7));
        assert!(matches!(c.get("acme", 0, |v| Some(*v)), Lookup::Shredded));
        assert!(c.is_shredded("acme"));
        assert!(!c.is_shredded("beta"));
    }

    #[test]
    fn a_fetch_that_began_before_an_invalidation_is_turned_away() {
        let c = KeyCache::new(BOUNDS);
        let before = ticket(&c);
        c.invalidate("acme");
        assert!(!c.fill("acme", before, 0, 7));
        let after = ticket(&c);
        assert!(c.fill("acme", after, 0, 8));
        assert_eq!(hit(&c, 0), Some(8));
    }

    #[test]
    fn a_value_lacking_what_is_asked_is_a_miss() {
        let c = KeyCache::new(BOUNDS);
        let t = ticket(&c);
        assert!(c.fill("acme", t, 0, 7));
        assert!(matches!(
            c.get("acme", 0, |v| (*v > 7).then_some(())),
            Lookup::Miss(_)
        ));
    }
}
