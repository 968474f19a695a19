//! What a scrub finds, sent as it goes and counted for the closing line.

use serde::Serialize;
use tokio::sync::mpsc;

use super::ScrubError;

/// What a scrub reports, one JSON line each. `store` names the copy (the primary store or a
/// replica) a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Finding {
    /// An object the metadata records is not in the store.
    Missing {
        job: String,
        key: String,
        store: String,
    },
    /// An object does not open, or is not what the metadata records.
    Corrupt {
        job: String,
        key: String,
        store: String,
        reason: String,
    },
    /// An object under a job that no record names.
    Orphaned {
        job: String,
        key: String,
        store: String,
    },
    /// A missing or corrupt copy was replaced by the bytes of a good one (`--repair`), and
    /// reads through as the record says.
    Repaired {
        job: String,
        key: String,
        store: String,
        from: String,
    },
    /// A missing or corrupt copy could not be repaired: no good copy, or the write failed.
    NotRepaired {
        job: String,
        key: String,
        store: String,
        reason: String,
    },
    /// A job finished: scrub again with `--after` this job to go on from here.
    Progress {
        job: String,
        jobs_done: u32,
        jobs: u32,
        objects: u64,
        bytes: u64,
    },
    /// The end, with the totals.
    Done {
        jobs: u32,
        objects: u64,
        bytes: u64,
        missing: u32,
        corrupt: u32,
        orphaned: u32,
        repaired: u32,
        not_repaired: u32,
    },
}

/// Where a finding was made: which job, which object, which copy.
pub(crate) struct At<'a> {
    pub job: &'a str,
    pub key: &'a str,
    pub store: &'a str,
}

impl At<'_> {
    pub fn missing(&self) -> Finding {
        let (job, key, store) = self.owned();
        Finding::Missing { job, key, store }
    }

    pub fn corrupt(&self, reason: String) -> Finding {
        let (job, key, store) = self.owned();
        Finding::Corrupt {
            job,
            key,
            store,
            reason,
        }
    }

    pub fn orphaned(&self) -> Finding {
        let (job, key, store) = self.owned();
        Finding::Orphaned { job, key, store }
    }

    pub fn repaired(&self, from: &str) -> Finding {
        let (job, key, store) = self.owned();
        let from = from.to_string();
        Finding::Repaired {
            job,
            key,
            store,
            from,
        }
    }

    pub fn not_repaired(&self, reason: String) -> Finding {
        let (job, key, store) = self.owned();
        Finding::NotRepaired {
            job,
            key,
            store,
            reason,
        }
    }

    fn owned(&self) -> (String, String, String) {
        (self.job.into(), self.key.into(), self.store.into())
    }
}

/// The findings sent so far, counted as they go.
pub(crate) struct Report {
    out: mpsc::Sender<Finding>,
    objects: u64,
    bytes: u64,
    missing: u32,
    corrupt: u32,
    orphaned: u32,
    repaired: u32,
    not_repaired: u32,
}

impl Report {
    pub fn to(out: mpsc::Sender<Finding>) -> Report {
        Report {
            out,
            objects: 0,
            bytes: 0,
            missing: 0,
            corrupt: 0,
            orphaned: 0,
            repaired: 0,
            not_repaired: 0,
        }
    }

    /// An object read through, `bytes` of plaintext long.
    pub fn read(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }

    /// Counts a finding about an object and sends it.
    pub async fn found(&mut self, f: Finding) -> Result<(), ScrubError> {
        match f {
            Finding::Missing { .. } => self.missing += 1,
            Finding::Corrupt { .. } => self.corrupt += 1,
            Finding::Orphaned { .. } => self.orphaned += 1,
            Finding::Repaired { .. } => self.repaired += 1,
            Finding::NotRepaired { .. } => self.not_repaired += 1,
            Finding::Progress { .. } | Finding::Done { .. } => {}
        }
        self.send(f).await
    }

    async fn send(&self, f: Finding) -> Result<(), ScrubError> {
        self.out.send(f).await.map_err(|_| ScrubError::Gone)
    }

    pub async fn progress(&self, job: &str, jobs_done: u32, jobs: u32) -> Result<(), ScrubError> {
        self.send(Finding::Progress {
            job: job.to_string(),
            jobs_done,
            jobs,
            objects: self.objects,
            bytes: self.bytes,
        })
        .await
    }

    pub async fn done(self, jobs: u32) -> Result<(), ScrubError> {
        self.send(Finding::Done {
            jobs,
            objects: self.objects,
            bytes: self.bytes,
            missing: self.missing,
            corrupt: self.corrupt,
            orphaned: self.orphaned,
            repaired: self.repaired,
            not_repaired: self.not_repaired,
        })
        .await
    }
}
