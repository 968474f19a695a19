//! Scrubbing: checking that every stored object of a tenant still opens, before anyone needs
//! to read it.
//!
//! For each job of the tenant (in job id order, so a scrub can go on after the last job a
//! stopped one finished) every object the metadata expects is read through and authenticated
//! (header, key commitment, every chunk's tag) and its plaintext digest and size compared with
//! the record; the plaintext is dropped as it is read and never leaves the process. What the
//! store holds under the job that no record names is reported as orphaned. The read rate is
//! bounded so a scrub does not crowd out ingest.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quire_pipeline::{keys, PipelineError};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::edge::State;
use crate::meta::MetaError;

/// What a scrub reports, one JSON line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Finding {
    /// An object the metadata records is not in the store.
    Missing { job: String, key: String },
    /// An object does not open, or is not what the metadata records.
    Corrupt {
        job: String,
        key: String,
        reason: String,
    },
    /// An object under a job that no record names.
    Orphaned { job: String, key: String },
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
    },
}

/// Why a scrub stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScrubError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("the scrub's reader went away")]
    Gone,
}

/// Scrubs `tenant`'s jobs after `after` (all if `None`), reading at most `max_bytes_per_sec`
/// (0: unbounded); every finding goes to `out` as it is made.
pub(crate) async fn scrub(
    state: &State,
    tenant: &str,
    after: Option<&str>,
    max_bytes_per_sec: u64,
    out: mpsc::Sender<Finding>,
) -> Result<(), ScrubError> {
    let (meta, t) = (state.meta.clone(), tenant.to_string());
    let jobs = tokio::task::spawn_blocking(move || meta.jobs(&t))
        .await
        .expect("metadata task panicked")?;
    let jobs: Vec<_> = jobs
        .into_iter()
        .filter(|(id, row)| row.deleted_unix.is_none() && after.is_none_or(|a| id.as_str() > a))
        .collect();
    let mut pace = Pace::new(max_bytes_per_sec);
    let mut report = Report::to(out);
    for (done, (job, row)) in jobs.iter().enumerate() {
        let store = state.pipeline.store_for(tenant);
        let listed: HashSet<String> = store
            .list(&keys::job_prefix(tenant, job))
            .await
            .map_err(PipelineError::from)?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let (meta, t, j) = (state.meta.clone(), tenant.to_string(), job.clone());
        let pages = tokio::task::spawn_blocking(move || meta.pages(&t, &j))
            .await
            .expect("metadata task panicked")?;
        // Every object the records name, noted as expected: `Ok` if the store lists it.
        let mut expected: HashSet<String> = HashSet::new();
        let mut check = |key: String| {
            expected.insert(key.clone());
            if listed.contains(&key) {
                Ok(key)
            } else {
                Err(key)
            }
        };
        for page in &pages {
            let key = match check(keys::page_key(tenant, job, page.index)) {
                Ok(key) => key,
                Err(key) => {
                    report.missing(job, key).await?;
                    continue;
                }
            };
            let (read, problem) = page_problem(state, tenant, &key, page).await;
            report.read(read);
            if let Some(reason) = problem {
                report.corrupt(job, key, reason).await?;
            }
            pace.after(page.size).await;
        }
        if row.committed {
            match check(keys::manifest_key(tenant, job)) {
                Err(key) => report.missing(job, key).await?,
                Ok(key) => {
                    report.read(0);
                    if let Some(reason) = manifest_problem(state, tenant, job, &pages).await {
                        report.corrupt(job, key, reason).await?;
                    }
                }
            }
        }
        let mut strays: Vec<&String> = listed.difference(&expected).collect();
        strays.sort();
        for key in strays {
            report.orphaned(job, key.clone()).await?;
        }
        report
            .progress(job, done as u32 + 1, jobs.len() as u32)
            .await?;
    }
    report.done(jobs.len() as u32).await
}

/// The findings sent so far, counted as they go.
struct Report {
    out: mpsc::Sender<Finding>,
    objects: u64,
    bytes: u64,
    missing: u32,
    corrupt: u32,
    orphaned: u32,
}

impl Report {
    fn to(out: mpsc::Sender<Finding>) -> Report {
        Report {
            out,
            objects: 0,
            bytes: 0,
            missing: 0,
            corrupt: 0,
            orphaned: 0,
        }
    }

    /// An object read through, `bytes` of plaintext long.
    fn read(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }

    async fn send(&self, f: Finding) -> Result<(), ScrubError> {
        self.out.send(f).await.map_err(|_| ScrubError::Gone)
    }

    async fn missing(&mut self, job: &str, key: String) -> Result<(), ScrubError> {
        self.missing += 1;
        let job = job.to_string();
        self.send(Finding::Missing { job, key }).await
    }

    async fn corrupt(&mut self, job: &str, key: String, reason: String) -> Result<(), ScrubError> {
        self.corrupt += 1;
        let job = job.to_string();
        self.send(Finding::Corrupt { job, key, reason }).await
    }

    async fn orphaned(&mut self, job: &str, key: String) -> Result<(), ScrubError> {
        self.orphaned += 1;
        let job = job.to_string();
        self.send(Finding::Orphaned { job, key }).await
    }

    async fn progress(&self, job: &str, jobs_done: u32, jobs: u32) -> Result<(), ScrubError> {
        self.send(Finding::Progress {
            job: job.to_string(),
            jobs_done,
            jobs,
            objects: self.objects,
            bytes: self.bytes,
        })
        .await
    }

    async fn done(self, jobs: u32) -> Result<(), ScrubError> {
        self.send(Finding::Done {
            jobs,
            objects: self.objects,
            bytes: self.bytes,
            missing: self.missing,
            corrupt: self.corrupt,
            orphaned: self.orphaned,
        })
        .await
    }
}

/// Reads a page through: how much plaintext it gave, and why it is not the page on record,
/// if it is not.
async fn page_problem(
    state: &State,
    tenant: &str,
    key: &str,
    page: &quire_codecs::wire::PageEntry,
) -> (u64, Option<String>) {
    match read_through(state, tenant, key).await {
        Ok((digest, len)) if digest == page.sha256 && len == page.size => (len, None),
        Ok((_, len)) => (
            len,
            Some("opens, but is not the page on record (digest or size)".into()),
        ),
        Err(e) => (0, Some(e.to_string())),
    }
}

/// Reads an object through, authenticating every chunk; the plaintext is dropped as it comes.
async fn read_through(
    state: &State,
    tenant: &str,
    key: &str,
) -> Result<([u8; 32], u64), PipelineError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let result = state.pipeline.read_object(tenant, key, tx).await;
    let _ = drain.await;
    result
}

/// Why the job's manifest is not what its records say, if it is not.
async fn manifest_problem(
    state: &State,
    tenant: &str,
    job: &str,
    pages: &[quire_codecs::wire::PageEntry],
) -> Option<String> {
    match state.pipeline.read_manifest(tenant, job).await {
        Ok(m) if m.pages == pages => None,
        Ok(_) => Some("opens, but does not list the pages on record".into()),
        Err(e) => Some(e.to_string()),
    }
}

/// Keeps reading under a byte rate.
struct Pace {
    rate: u64,
    began: Instant,
    read: u64,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            rate,
            began: Instant::now(),
            read: 0,
        }
    }

    async fn after(&mut self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        self.read += bytes;
        let due = Duration::from_secs_f64(self.read as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.began.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}
