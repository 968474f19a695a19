//! Model checks of the key cache's shred race: every interleaving below is explored.
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p quire-key-cache --release --test loom`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use quire_key_cache::{Bounds, KeyCache, Lookup};

const BOUNDS: Bounds = Bounds {
    max_age: u64::MAX,
    max_uses: u64::MAX,
};

/// A reader misses, fetches the key from the "vault" (which the shredder destroys), and
/// fills; a shredder destroys the vault's key and shreds the cache. Whatever the order, once
/// the shred has returned no lookup may answer with the key.
#[test]
fn no_key_is_served_after_a_shred_returns() {
    loom::model(|| {
        let cache = Arc::new(KeyCache::<u32>::new(BOUNDS));
        let vault_has_key = Arc::new(AtomicBool::new(true));

        let reader = {
            let (cache, vault) = (cache.clone(), vault_has_key.clone());
            thread::spawn(move || {
                if let Lookup::Miss(ticket) = cache.get("acme", 0, |v| Some(*v)) {
                    if vault.load(Ordering::SeqCst) {
                        cache.fill("acme", ticket, 0, 42);
                    }
                }
            })
        };
        let shredder = {
            let (cache, vault) = (cache.clone(), vault_has_key.clone());
            thread::spawn(move || {
                vault.store(false, Ordering::SeqCst);
                cache.shred("acme");
                // From here on, nothing may answer.
                assert!(matches!(
                    cache.get("acme", 0, |v| Some(*v)),
                    Lookup::Shredded
                ));
            })
        };
        reader.join().unwrap();
        shredder.join().unwrap();
        assert!(matches!(
            cache.get("acme", 0, |v| Some(*v)),
            Lookup::Shredded
        ));
    });
}

/// Two readers race to fill after a rotation invalidated the cache: the one whose lookup
/// came before the invalidation never overwrites the newer fill.
#[test]
fn a_fill_from_before_an_invalidation_never_wins() {
    loom::model(|| {
        let cache = Arc::new(KeyCache::<u32>::new(BOUNDS));
        let Lookup::Miss(old) = cache.get("acme", 0, |v| Some(*v)) else {
            panic!("empty cache must miss")
        };
        let rotator = {
            let cache = cache.clone();
            thread::spawn(move || {
                cache.invalidate("acme");
                if let Lookup::Miss(t) = cache.get("acme", 0, |v| Some(*v)) {
                    cache.fill("acme", t, 0, 2);
                }
            })
        };
        let stale = {
            let cache = cache.clone();
            thread::spawn(move || cache.fill("acme", old, 0, 1))
        };
        rotator.join().unwrap();
        stale.join().unwrap();
        assert!(
            matches!(cache.get("acme", 0, |v| Some(*v)), Lookup::Hit(2)),
            "the key from before the rotation came back, or the new one was lost"
        );
    });
}
