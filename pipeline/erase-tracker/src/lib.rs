//! When may a spool key be destroyed?
//!
//! The spool seals every record under the key of its *epoch*. Destroying that key is what
//! erases the records (crypto erase), so it must happen exactly once, and only when no record
//! under it still waits for the object store. Records finish out of order, an upload may be
//! retried while an earlier attempt is still running, and a new record may try to join the
//! epoch at the very moment it is closed. [`EpochTracker`] settles all of that with one atomic
//! word; [`RecordLatch`] makes sure a record that is delivered twice is counted once.
//!
//! Both are lock-free and kept in this crate of their own, with no dependencies, so that
//! `RUSTFLAGS="--cfg loom" cargo test -p quire-erase-tracker` model-checks them on their own
//! (see `tests/loom.rs`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The epoch takes no more records.
const CLOSED: u64 = 1 << 63;
/// The epoch's key has been handed out for destruction.
const ERASED: u64 = 1 << 62;
/// Records of the epoch not yet delivered.
const COUNT: u64 = ERASED - 1;

/// What the caller must do after a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an `Erase::Now` that is ignored leaves a spool key on the machine"]
pub enum Erase {
    /// Destroy the epoch's key now. Returned to exactly one caller per epoch.
    Now,
    /// Records are still outstanding, or the epoch is still open, or the key is already gone.
    NotYet,
}

/// Counts an epoch's outstanding records and decides when its key may go.
#[derive(Debug)]
pub struct EpochTracker {
    state: AtomicU64,
}

impl Default for EpochTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl EpochTracker {
    /// An open epoch with no records.
    pub fn new() -> Self {
        EpochTracker {
            state: AtomicU64::new(0),
        }
    }

    /// Counts one more record under this epoch. `false` once the epoch is closed: the record
    /// must go under a newer epoch instead.
    pub fn try_add(&self) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                if s & CLOSED != 0 {
                    None
                } else {
                    assert!(s & COUNT < COUNT, "epoch record count overflow");
                    Some(s + 1)
                }
            })
            .is_ok()
    }

    /// One record of this epoch reached the store (or was given up for good). Call once per
    /// successful [`EpochTracker::try_add`], and only after the store acknowledged the write.
    pub fn release(&self) -> Erase {
        let prev = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                assert!(s & COUNT > 0, "released more records than were added");
                let n = s - 1;
                if n & COUNT == 0 && n & CLOSED != 0 {
                    Some(n | ERASED)
                } else {
                    Some(n)
                }
            })
            .expect("the update closure always returns Some");
        Self::decide(prev, prev - 1)
    }

    /// Takes no more records. The key goes now if nothing is outstanding, otherwise with the
    /// last [`EpochTracker::release`]. Closing twice is harmless.
    pub fn close(&self) -> Erase {
        let prev = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                if s & CLOSED != 0 {
                    None
                } else if s & COUNT == 0 {
                    Some(s | CLOSED | ERASED)
                } else {
                    Some(s | CLOSED)
                }
            });
        match prev {
            Ok(p) => Self::decide(p, p | CLOSED),
            Err(_) => Erase::NotYet,
        }
    }

    fn decide(prev: u64, next_without_erase: u64) -> Erase {
        let now_due = next_without_erase & COUNT == 0 && next_without_erase & CLOSED != 0;
        if now_due && prev & ERASED == 0 {
            Erase::Now
        } else {
            Erase::NotYet
        }
    }

    /// Records not yet delivered.
    pub fn outstanding(&self) -> u64 {
        self.state.load(Ordering::Acquire) & COUNT
    }

    /// Whether the epoch takes no more records.
    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Whether the epoch's key has been handed out for destruction.
    pub fn is_erased(&self) -> bool {
        self.state.load(Ordering::Acquire) & ERASED != 0
    }
}

/// Set once, by whichever attempt first sees the record delivered. A retry racing the attempt
/// that succeeded must not release the epoch a second time.
#[derive(Debug, Default)]
pub struct RecordLatch {
    delivered: AtomicBool,
}

impl RecordLatch {
    /// A record not yet delivered.
    pub fn new() -> Self {
        RecordLatch {
            delivered: AtomicBool::new(false),
        }
    }

    /// Marks the record delivered; `true` only for the first caller.
    pub fn deliver(&self) -> bool {
        !self.delivered.swap(true, Ordering::AcqRel)
    }

    /// Whether the record has been delivered.
    pub fn is_delivered(&self) -> bool {
        self.delivered.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_empty_epoch_is_erased_when_closed() {
        let t = EpochTracker::new();
        assert_eq!(t.close(), Erase::Now);
        assert_eq!(t.close(), Erase::NotYet);
        assert!(!t.try_add());
        assert!(t.is_erased());
    }

    #[test]
    fn the_last_release_after_close_erases() {
        let t = EpochTracker::new();
        assert!(t.try_add());
        assert!(t.try_add());
        assert_eq!(t.release(), Erase::NotYet, "epoch still open");
        assert_eq!(t.close(), Erase::NotYet, "one record outstanding");
        assert!(!t.is_erased());
        assert_eq!(t.release(), Erase::Now);
        assert!(t.is_erased());
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn an_open_epoch_that_drains_keeps_its_key() {
        let t = EpochTracker::new();
        assert!(t.try_add());
        assert_eq!(t.release(), Erase::NotYet);
        assert!(t.try_add(), "still open, takes more");
        assert_eq!(t.release(), Erase::NotYet);
        assert_eq!(t.close(), Erase::Now);
    }

    #[test]
    #[should_panic(expected = "released more records than were added")]
    fn releasing_more_than_added_is_a_bug() {
        let t = EpochTracker::new();
        let _ = t.release();
    }

    #[test]
    fn a_record_is_delivered_once() {
        let l = RecordLatch::new();
        assert!(l.deliver());
        assert!(!l.deliver());
        assert!(l.is_delivered());
    }
}
