//! What a page cost and what it was, for the operator's metrics: the time each stage spent on
//! it, the format its first bytes show and the compression chosen; and what the delivery
//! stage met on the way to the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the caller knows of a page before it arrives, from its own records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// Nothing: the store is asked whether the page's key holds an object already, so a
    /// retried page that is stored is never read again.
    Unknown,
    /// The caller's metadata has no record of the page stored. A crash between store and
    /// record can still have left an object, so this only skips the store's existence check
    /// where the write itself is conditional (the small-page path), which finds it instead:
    /// one round trip to the store, and one hand-off to a blocking thread, fewer per page.
    NotRecorded,
}

/// Time a page spent in each stage. Hash, compress (with chunking) and seal are the work
/// done on the page's bytes, summed over its parts (seal in parallel: the sum across
/// threads); spool is writing its sealed bytes to the spool; store is from the sealed object
/// to the store's confirmation (zero under `ack = "spooled"`, which does not wait for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    pub hash: Duration,
    pub compress: Duration,
    pub seal: Duration,
    pub spool: Duration,
    pub store: Duration,
}

/// Page formats told apart by their first bytes (the scanners' formats, and the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageFormat {
    Jpeg,
    Tiff,
    Pdf,
    Png,
    #[default]
    Other,
}

impl PageFormat {
    /// The format of a page starting with `sample`.
    pub fn detect(sample: &[u8]) -> PageFormat {
        if sample.starts_with(&[0xff, 0xd8, 0xff]) {
            PageFormat::Jpeg
        } else if sample.starts_with(b"II*\0") || sample.starts_with(b"MM\0*") {
            PageFormat::Tiff
        } else if sample.starts_with(b"%PDF-") {
            PageFormat::Pdf
        } else if sample.starts_with(&[0x89, b'P', b'N', b'G']) {
            PageFormat::Png
        } else {
            PageFormat::Other
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PageFormat::Jpeg => "jpeg",
            PageFormat::Tiff => "tiff",
            PageFormat::Pdf => "pdf",
            PageFormat::Png => "png",
            PageFormat::Other => "other",
        }
    }
}

/// Why a write to the store did not succeed (the `kind` label of the store error metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store failed or was unreachable; retried.
    Unavailable,
    /// The store did not answer in time; retried.
    Timeout,
    /// The store refused for good (a different object under the key, an invalid key).
    Rejected,
    /// The spooled copy could not be read back intact; quarantined.
    Damaged,
}

impl StoreErrorKind {
    pub const ALL: [StoreErrorKind; 4] = [
        StoreErrorKind::Unavailable,
        StoreErrorKind::Timeout,
        StoreErrorKind::Rejected,
        StoreErrorKind::Damaged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Rejected => "rejected",
            StoreErrorKind::Damaged => "damaged",
        }
    }
}

/// Counts of what the way to the store met since the pipeline started, read at scrape time.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    retries: AtomicU64,
    errors: [AtomicU64; 4],
    /// Objects in their primary store whose replica copies are not all stored yet.
    replicating: AtomicU64,
}

impl DeliveryStats {
    pub(crate) fn error(&self, kind: StoreErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn replicating(&self, more: bool) {
        if more {
            self.replicating.fetch_add(1, Ordering::Relaxed);
        } else {
            self.replicating.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Objects stored in their primary store whose copies to replicas are still on their way.
    pub fn replica_pending(&self) -> u64 {
        self.replicating.load(Ordering::Relaxed)
    }

    /// Delivery attempts repeated after a failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Store write failures of `kind`.
    pub fn errors(&self, kind: StoreErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }
}

/// Time spent by the parallel seal tasks of one page, summed.
#[derive(Debug, Default)]
pub(crate) struct SealClock(AtomicU64);

impl SealClock {
    pub(crate) fn add(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanners_formats_are_told_apart() {
        assert_eq!(
            PageFormat::detect(&[0xff, 0xd8, 0xff, 0xe0]),
            PageFormat::Jpeg
        );
        assert_eq!(PageFormat::detect(b"II*\0\x08"), PageFormat::Tiff);
        assert_eq!(PageFormat::detect(b"MM\0*\0"), PageFormat::Tiff);
        assert_eq!(PageFormat::detect(b"%PDF-1.7"), PageFormat::Pdf);
        assert_eq!(PageFormat::detect(b"\x89PNG\r\n"), PageFormat::Png);
        assert_eq!(PageFormat::detect(b"hello"), PageFormat::Other);
        assert_eq!(PageFormat::detect(b""), PageFormat::Other);
    }
}
