//! Scrubbing: checking that every stored object of a tenant still opens, in every copy,
//! before anyone needs to read it; and with `repair`, mending a bad copy from a good one.
//!
//! For each job of the tenant (in job id order, so a scrub can go on after the last job a
//! stopped one finished) every object the metadata expects is read through in the primary
//! store and each replica and authenticated (header, key commitment, every chunk's tag), and
//! its plaintext digest and size compared with the record; the plaintext is dropped as it is
//! read and never leaves the process. What a store holds under the job that no record names
//! is reported as orphaned. The read rate is bounded so a scrub does not crowd out ingest.
//! A repair copies the stored bytes of a good copy over the bad one (ciphertext as stored,
//! never decrypted for it) and reads the result through before reporting it repaired.

mod report;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use quire_codecs::wire::PageEntry;
use quire_pipeline::{keys, PipelineError};
use quire_storage::{Store, StoreError};
use tokio::sync::mpsc;
use tracing::info;

use crate::edge::State;
use crate::meta::MetaError;
pub(crate) use report::Finding;
use report::{At, Report};

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

/// What a scrub does besides reading: `Some((actor, role))` repairs bad copies, in that
/// actor's name in the audit log.
pub(crate) type Repair<'a> = Option<(&'a str, &'a str)>;

/// Scrubs `tenant`'s jobs after `after` (all if `None`), reading at most `max_bytes_per_sec`
/// (0: unbounded); every finding goes to `out` as it is made.
pub(crate) async fn scrub(
    state: &State,
    tenant: &str,
    after: Option<&str>,
    max_bytes_per_sec: u64,
    repair: Repair<'_>,
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
    let copies: Vec<Store> = state
        .pipeline
        .copies_for(tenant)
        .into_iter()
        .cloned()
        .collect();
    let mut pace = Pace::new(max_bytes_per_sec);
    let mut scrub = Scrub {
        state,
        tenant,
        copies: &copies,
        listed: Vec::new(),
        repair,
        report: Report::to(out),
    };
    for (done, (job, row)) in jobs.iter().enumerate() {
        scrub.listed.clear();
        for store in &copies {
            let listed: HashSet<String> = store
                .list(&keys::job_prefix(tenant, job))
                .await
                .map_err(PipelineError::from)?
                .into_iter()
                .map(|o| o.key)
                .collect();
            scrub.listed.push(listed);
        }
        let (meta, t, j) = (state.meta.clone(), tenant.to_string(), job.clone());
        let pages = tokio::task::spawn_blocking(move || meta.pages(&t, &j))
            .await
            .expect("metadata task panicked")?;
        let mut expected: HashSet<String> = HashSet::new();
        for page in &pages {
            let key = keys::page_key(tenant, job, page.index);
            scrub.object(job, &key, Expect::Page(page)).await?;
            expected.insert(key);
            pace.after(page.size * copies.len() as u64).await;
        }
        if row.committed {
            let key = keys::manifest_key(tenant, job);
            scrub.object(job, &key, Expect::Manifest(&pages)).await?;
            expected.insert(key);
        }
        for (store, listed) in copies.iter().zip(&scrub.listed) {
            let mut strays: Vec<&String> = listed.difference(&expected).collect();
            strays.sort();
            for key in strays {
                let at = At {
                    job,
                    key,
                    store: store.name(),
                };
                scrub.report.found(at.orphaned()).await?;
            }
        }
        scrub
            .report
            .progress(job, done as u32 + 1, jobs.len() as u32)
            .await?;
    }
    scrub.report.done(jobs.len() as u32).await
}

/// What an object must read through as.
#[derive(Clone, Copy)]
enum Expect<'a> {
    /// The page on record.
    Page(&'a PageEntry),
    /// A manifest listing exactly the pages on record.
    Manifest(&'a [PageEntry]),
}

/// One scrub's state: the tenant's copies, what each lists under the current job, and the
/// findings so far.
struct Scrub<'a> {
    state: &'a State,
    tenant: &'a str,
    copies: &'a [Store],
    /// Per copy, the keys its store lists under the current job.
    listed: Vec<HashSet<String>>,
    repair: Repair<'a>,
    report: Report,
}

impl Scrub<'_> {
    /// Checks one object in every copy, reports each bad copy, and repairs it from a good
    /// one if asked to.
    async fn object(&mut self, job: &str, key: &str, expect: Expect<'_>) -> Result<(), ScrubError> {
        if self.state.pipeline.spool.pending(key).is_some() {
            // On its way to the stores (a replica's copy may still be missing): not a finding.
            return Ok(());
        }
        let mut bad = Vec::new();
        let mut good = None;
        for (i, store) in self.copies.iter().enumerate() {
            let at = At {
                job,
                key,
                store: store.name(),
            };
            if !self.listed[i].contains(key) {
                self.report.found(at.missing()).await?;
                bad.push(i);
                continue;
            }
            let (read, problem) = self.problem(store, job, key, expect).await;
            self.report.read(read);
            match problem {
                Some(reason) => {
                    self.report.found(at.corrupt(reason)).await?;
                    bad.push(i);
                }
                None => good = good.or(Some(i)),
            }
        }
        let Some(actor) = self.repair else {
            return Ok(());
        };
        for i in bad {
            let store = &self.copies[i];
            let at = At {
                job,
                key,
                store: store.name(),
            };
            let Some(g) = good else {
                let reason = "no copy reads through as the record says".to_string();
                self.report.found(at.not_repaired(reason)).await?;
                continue;
            };
            let from = &self.copies[g];
            let mended = match copy_object(from, store, key).await {
                Ok(()) => self.problem(store, job, key, expect).await.1,
                Err(e) => Some(format!("copying from {}: {e}", from.name())),
            };
            match mended {
                None => {
                    self.audit_repair(actor, &at, from.name()).await;
                    self.report.found(at.repaired(from.name())).await?;
                }
                Some(reason) => self.report.found(at.not_repaired(reason)).await?,
            }
        }
        Ok(())
    }

    /// Reads `key` in `store` through: how much plaintext it gave, and why it is not what
    /// the records say, if it is not.
    async fn problem(
        &self,
        store: &Store,
        job: &str,
        key: &str,
        expect: Expect<'_>,
    ) -> (u64, Option<String>) {
        let pipeline = &self.state.pipeline;
        match expect {
            Expect::Page(page) => match pipeline.read_through(store, self.tenant, key).await {
                Ok((digest, len)) if digest == page.sha256 && len == page.size => (len, None),
                Ok((_, len)) => (
                    len,
                    Some("opens, but is not the page on record (digest or size)".into()),
                ),
                Err(e) => (0, Some(e.to_string())),
            },
            Expect::Manifest(pages) => {
                match pipeline.read_manifest_in(store, self.tenant, job).await {
                    Ok(m) if m.pages == pages => (0, None),
                    Ok(_) => (
                        0,
                        Some("opens, but does not list the pages on record".into()),
                    ),
                    Err(e) => (0, Some(e.to_string())),
                }
            }
        }
    }

    /// Every repair is in the audit log: a store was written outside an upload.
    async fn audit_repair(&self, (actor, role): (&str, &str), at: &At<'_>, from: &str) {
        let detail = format!(
            "job={} key={} store={} from={from}",
            at.job, at.key, at.store
        );
        info!(
            tenant = self.tenant,
            job = at.job,
            key = at.key,
            store = at.store,
            from,
            "copy repaired"
        );
        if let Err(e) = self
            .state
            .audit
            .append(actor, role, "object.repair", self.tenant, &detail, "ok")
            .await
        {
            tracing::error!(error = %e, "cannot write the audit log after repairing a copy");
        }
    }
}

/// Replaces whatever `to` holds at `key` with the bytes `from` holds there, as stored.
async fn copy_object(from: &Store, to: &Store, key: &str) -> Result<(), StoreError> {
    let mut source = from.get_stream(key).await?;
    let mut up = to.begin_replace(key).await?;
    while let Some(piece) = source.next().await {
        match piece {
            Ok(bytes) => up.write(bytes).await?,
            Err(e) => {
                let _ = up.abort().await;
                return Err(e);
            }
        }
    }
    up.finish().await
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
