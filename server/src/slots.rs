//! One upload per page at a time. A scanner that died mid-page leaves its stream open on the
//! server until the idle timeout; when the scanner comes back and sends the page again, the
//! new upload takes over: the stale one is told to give up (its upload is aborted, nothing of
//! it is stored) and the new one waits for its slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The pages being stored right now, by object key.
#[derive(Debug, Default)]
pub struct PageSlots {
    next_id: AtomicU64,
    slots: Mutex<HashMap<String, (u64, watch::Sender<bool>)>>,
}

/// Holds a page's slot; released on drop. `superseded` turns true when a newer upload of the
/// same page wants the slot.
#[derive(Debug)]
pub struct Slot<'a> {
    owner: &'a PageSlots,
    key: String,
    id: u64,
    pub superseded: watch::Receiver<bool>,
}

impl PageSlots {
    /// Claims the slot for `key`, asking any current holder to give up. `None` if the holder
    /// has not let go within `patience`.
    pub async fn claim(&self, key: &str, patience: Duration) -> Option<Slot<'_>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + patience;
        loop {
            {
                let mut slots = self.slots.lock().expect("slot lock poisoned");
                match slots.get(key) {
                    None => {
                        let (tx, rx) = watch::channel(false);
                        slots.insert(key.to_string(), (id, tx));
                        return Some(Slot {
                            owner: self,
                            key: key.to_string(),
                            id,
                            superseded: rx,
                        });
                    }
                    Some((_, tx)) => {
                        tx.send_replace(true);
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many slots are held.
    pub fn len(&self) -> usize {
        self.slots.lock().expect("slot lock poisoned").len()
    }

    /// Whether no slot is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut slots = self.owner.slots.lock().expect("slot lock poisoned");
        if slots.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newer_claim_supersedes_the_holder() {
        let slots = PageSlots::default();
        let mut first = slots.claim("k", Duration::from_secs(1)).await.unwrap();
        assert!(!*first.superseded.borrow());
        let second = async { slots.claim("k", Duration::from_secs(5)).await };
        let holder = async {
            first.superseded.changed().await.unwrap();
            assert!(*first.superseded.borrow());
            drop(first);
        };
        let (got, ()) = tokio::join!(second, holder);
        let got = got.expect("the slot was handed over");
        assert_eq!(slots.len(), 1);
        drop(got);
        assert!(slots.is_empty());
    }

    #[tokio::test]
    async fn a_holder_that_never_lets_go_makes_the_claim_fail() {
        let slots = PageSlots::default();
        let _stuck = slots.claim("k", Duration::from_secs(1)).await.unwrap();
        assert!(slots.claim("k", Duration::from_millis(50)).await.is_none());
        assert!(slots
            .claim("other", Duration::from_millis(50))
            .await
            .is_some());
    }
}
