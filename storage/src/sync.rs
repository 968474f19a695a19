//! Durability in batches for a local store: objects are written without a sync of their
//! own, then each write waits for one `syncfs(2)` of the store's filesystem that began after
//! it finished. Writes that finish while a sync runs share the next one, so a busy store pays
//! one device flush for many objects instead of an fsync of each file and of its directory
//! (two or more waits each, which is what a page cost on the fsync'd local store; see
//! docs/PERFORMANCE.md). A write is never acknowledged before its sync succeeded.
//!
//! One thread makes the syncs, as the page recorder makes metadata commits: it takes every
//! waiting request, syncs once, answers them all; the next requests gather meanwhile.
//! Nothing waits for a batch to fill.

use std::path::Path;
use std::sync::mpsc;

use tokio::sync::oneshot;

type Answer = oneshot::Sender<Result<(), String>>;

/// Makes writes to one filesystem durable, in batches. Dropping it ends its thread once the
/// requests already made are answered.
#[derive(Debug)]
pub(crate) struct Syncer {
    requests: std::sync::Mutex<mpsc::Sender<Answer>>,
}

impl Syncer {
    /// Syncs the filesystem holding the directory `root`.
    pub(crate) fn for_directory(root: &Path) -> std::io::Result<Syncer> {
        let dir = std::fs::File::open(root)?;
        Syncer::with(move || rustix::fs::syncfs(&dir).map_err(std::io::Error::from))
    }

    /// Syncs with `sync` (tests count and fail syncs through it).
    pub(crate) fn with(
        mut sync: impl FnMut() -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Syncer> {
        let (requests, waiting) = mpsc::channel::<Answer>();
        std::thread::Builder::new()
            .name("quire-store-sync".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    batch.extend(waiting.try_iter());
                    let result = sync().map_err(|e| e.to_string());
                    for answer in batch {
                        let _ = answer.send(result.clone());
                    }
                }
            })?;
        Ok(Syncer {
            requests: std::sync::Mutex::new(requests),
        })
    }

    /// Returns once everything written before this call is on stable storage.
    pub(crate) async fn sync(&self) -> Result<(), String> {
        let (answer, answered) = oneshot::channel();
        let stopped = || "the store's sync thread stopped".to_string();
        self.requests
            .lock()
            .map_err(|_| stopped())?
            .send(answer)
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Every caller returns only after a sync that began after its write; callers at the
    /// same time share syncs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_share_syncs_and_none_returns_before_one_that_began_after_its_write() {
        let written = Arc::new(AtomicU32::new(0));
        // The writes the last finished sync covers: those made before it began.
        let covered = Arc::new(AtomicU32::new(0));
        let syncs = Arc::new(AtomicU32::new(0));
        let (w, c, n) = (written.clone(), covered.clone(), syncs.clone());
        let syncer = Arc::new(
            Syncer::with(move || {
                let before = w.load(Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
                c.fetch_max(before, Ordering::SeqCst);
                n.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap(),
        );
        let callers: Vec<_> = (0..64)
            .map(|_| {
                let (syncer, written, covered) = (syncer.clone(), written.clone(), covered.clone());
                tokio::spawn(async move {
                    let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                    syncer.sync().await.unwrap();
                    assert!(
                        covered.load(Ordering::SeqCst) >= mine,
                        "write {mine} not synced"
                    );
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!((1..64).contains(&n), "{n} syncs for 64 callers");
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_callers() {
        let syncer = Syncer::with(|| Err(std::io::Error::other("EIO"))).unwrap();
        assert!(syncer.sync().await.unwrap_err().contains("EIO"));
    }
}
