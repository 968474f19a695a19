//! Model checks of the erase tracker: every interleaving of the threads below is explored.
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p quire-erase-tracker --release --test loom`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use quire_erase_tracker::{EpochTracker, Erase, RecordLatch};

/// Stands in for the spool key: destroying it twice, or while a record still needs it, fails.
struct Key {
    records_needing_it: AtomicUsize,
    destroyed: AtomicUsize,
}

impl Key {
    fn destroy(&self) {
        assert_eq!(
            self.records_needing_it.load(Ordering::SeqCst),
            0,
            "key destroyed while a record still waits for the store"
        );
        assert_eq!(
            self.destroyed.fetch_add(1, Ordering::SeqCst),
            0,
            "key destroyed twice"
        );
    }
}

fn act(e: Erase, key: &Key) {
    if e == Erase::Now {
        key.destroy();
    }
}

/// Two records finish out of order on two threads while a third closes the epoch.
#[test]
fn out_of_order_deliveries_and_close_erase_exactly_once_after_the_last() {
    loom::model(|| {
        let t = Arc::new(EpochTracker::new());
        let key = Arc::new(Key {
            records_needing_it: AtomicUsize::new(0),
            destroyed: AtomicUsize::new(0),
        });
        for _ in 0..2 {
            assert!(t.try_add());
            key.records_needing_it.fetch_add(1, Ordering::SeqCst);
        }
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (t, key) = (t.clone(), key.clone());
                thread::spawn(move || {
                    // The store acknowledged this record: it no longer needs the key.
                    key.records_needing_it.fetch_sub(1, Ordering::SeqCst);
                    act(t.release(), &key);
                })
            })
            .collect();
        act(t.close(), &key);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(key.destroyed.load(Ordering::SeqCst), 1);
        assert!(t.is_erased());
    });
}

/// A retry races the attempt that already succeeded: the record is released once.
#[test]
fn a_record_delivered_by_two_racing_attempts_is_counted_once() {
    loom::model(|| {
        let t = Arc::new(EpochTracker::new());
        let latch = Arc::new(RecordLatch::new());
        let key = Arc::new(Key {
            records_needing_it: AtomicUsize::new(0),
            destroyed: AtomicUsize::new(0),
        });
        // Two records; only the first is raced.
        assert!(t.try_add());
        assert!(t.try_add());
        key.records_needing_it.store(2, Ordering::SeqCst);
        let attempts: Vec<_> = (0..2)
            .map(|_| {
                let (t, latch, key) = (t.clone(), latch.clone(), key.clone());
                thread::spawn(move || {
                    if latch.deliver() {
                        key.records_needing_it.fetch_sub(1, Ordering::SeqCst);
                        act(t.release(), &key);
                    }
                })
            })
            .collect();
        act(t.close(), &key);
        for a in attempts {
            a.join().unwrap();
        }
        // The second record is still outstanding: its key must survive the race.
        assert_eq!(key.destroyed.load(Ordering::SeqCst), 0);
        assert_eq!(t.outstanding(), 1);
        key.records_needing_it.fetch_sub(1, Ordering::SeqCst);
        act(t.release(), &key);
        assert_eq!(key.destroyed.load(Ordering::SeqCst), 1);
    });
}

/// A new record tries to join while the epoch is being closed and its last record delivered:
/// either it joins (and the key waits for it) or it is turned away (and goes to a new epoch).
#[test]
fn a_record_joining_during_close_is_either_counted_or_turned_away() {
    loom::model(|| {
        let t = Arc::new(EpochTracker::new());
        let key = Arc::new(Key {
            records_needing_it: AtomicUsize::new(1),
            destroyed: AtomicUsize::new(0),
        });
        assert!(t.try_add());
        let joiner = {
            let (t, key) = (t.clone(), key.clone());
            thread::spawn(move || {
                // The spool writes a record under the key only once the epoch counted it.
                if t.try_add() {
                    key.records_needing_it.fetch_add(1, Ordering::SeqCst);
                    true
                } else {
                    false
                }
            })
        };
        let deliverer = {
            let (t, key) = (t.clone(), key.clone());
            thread::spawn(move || {
                key.records_needing_it.fetch_sub(1, Ordering::SeqCst);
                act(t.release(), &key);
            })
        };
        act(t.close(), &key);
        let joined = joiner.join().unwrap();
        deliverer.join().unwrap();
        if joined {
            assert_eq!(
                key.destroyed.load(Ordering::SeqCst),
                0,
                "joined record lost its key"
            );
            key.records_needing_it.fetch_sub(1, Ordering::SeqCst);
            act(t.release(), &key);
        }
        assert_eq!(key.destroyed.load(Ordering::SeqCst), 1);
    });
}
