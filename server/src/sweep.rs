//! Retention enforced: the expiry sweeper, delete-on-delivery, and legal holds.
//!
//! Every deletion goes through [`delete_job`], which refuses while a legal hold covers the
//! job, deletes the manifest first (so the job stops being readable at once) and then every
//! page object, and records the deletion in the metadata and the append-only audit log. The
//! data key of each object lives only, wrapped, in that object's header, so deleting the
//! object destroys its key with it.

use std::sync::Arc;
use std::time::Duration;

use quire_pipeline::keys;
use tracing::{error, info, warn};

use crate::retention::{Due, Policy};
use crate::State;

/// What [`delete_job`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deletion {
    /// Deleted this many objects.
    Deleted(u32),
    /// Kept: a legal hold covers the job (the hold's reason).
    Held(String),
}

/// Deletes a job's objects for `why`, unless a legal hold covers it. Idempotent: a job
/// already (partly) deleted is finished.
pub(crate) async fn delete_job(
    state: &State,
    tenant: &str,
    job: &str,
    why: &Due,
    actor: &str,
) -> Result<Deletion, String> {
    let meta = state.meta.clone();
    let (t, j) = (tenant.to_string(), job.to_string());
    let hold = tokio::task::spawn_blocking(move || meta.hold_on(&t, &j))
        .await
        .expect("metadata task panicked")
        .map_err(|e| e.to_string())?;
    if let Some(h) = hold {
        return Ok(Deletion::Held(h.reason));
    }
    // Fail closed: no deletion that the audit log does not hold.
    let detail = format!("job={job} reason={why}");
    state
        .audit
        .append(actor, "system", "job.delete", tenant, &detail, "started")
        .await
        .map_err(|e| {
            error!(error = %e, tenant, job, "cannot write the audit log; job not deleted");
            format!("the audit log cannot be written ({e}); the job was not deleted")
        })?;
    let copies = state.pipeline.copies_for(tenant);
    let failed = |store: &quire_storage::Store, e: quire_storage::StoreError| {
        format!("{}: {e}", store.name())
    };
    let manifest = keys::manifest_key(tenant, job);
    let mut deleted = 0u32;
    // The manifest first, from every copy, so that no copy serves the job any more.
    for store in &copies {
        if store
            .exists(&manifest)
            .await
            .map_err(|e| failed(store, e))?
        {
            store
                .delete(&manifest)
                .await
                .map_err(|e| failed(store, e))?;
            deleted += 1;
        }
    }
    for store in &copies {
        let listed = store
            .list(&keys::job_prefix(tenant, job))
            .await
            .map_err(|e| failed(store, e))?;
        for obj in listed {
            store.delete(&obj.key).await.map_err(|e| failed(store, e))?;
            deleted += 1;
        }
    }
    // Partial copies a killed writer left are ciphertext of this job too (not objects).
    let leftovers = state
        .pipeline
        .remove_job_leftovers(tenant, job)
        .await
        .map_err(|e| e.to_string())?;
    let meta = state.meta.clone();
    let (t, j) = (tenant.to_string(), job.to_string());
    let at = state.clock.now_unix();
    tokio::task::spawn_blocking(move || meta.mark_deleted(&t, &j, at))
        .await
        .expect("metadata task panicked")
        .map_err(|e| e.to_string())?;
    let detail = format!(
        "job={job} objects={deleted} copies={} reason={why}",
        copies.len()
    );
    let done = state
        .audit
        .append(actor, "system", "job.delete", tenant, &detail, "ok")
        .await;
    if let Err(e) = done {
        error!(error = %e, tenant, job, "cannot write the audit log after deleting a job");
    }
    info!(tenant, job, objects = deleted, leftovers, reason = %why, "job deleted");
    Ok(Deletion::Deleted(deleted))
}

/// One pass over every tenant with a policy: deletes what is due at `now`.
pub(crate) async fn sweep_once(state: &State, now: i64) -> u32 {
    let mut deleted_jobs = 0;
    let policies: Vec<(String, Policy)> = state
        .retention
        .iter()
        .filter(|(_, p)| **p != Policy::Keep)
        .map(|(t, p)| (t.clone(), *p))
        .collect();
    for (tenant, policy) in policies {
        let meta = state.meta.clone();
        let t = tenant.clone();
        let jobs = match tokio::task::spawn_blocking(move || meta.jobs(&t))
            .await
            .expect("metadata task panicked")
        {
            Ok(j) => j,
            Err(e) => {
                warn!(tenant, error = %e, "sweeper cannot list jobs");
                continue;
            }
        };
        for (job, row) in jobs {
            if !row.committed || row.deleted_unix.is_some() {
                continue;
            }
            let Some(why) = policy.due(row.committed_unix, row.delivered_unix, now) else {
                continue;
            };
            match delete_job(state, &tenant, &job, &why, "retention-sweeper").await {
                Ok(Deletion::Deleted(_)) => deleted_jobs += 1,
                Ok(Deletion::Held(_)) => {}
                Err(e) => warn!(tenant, job, error = %e, "sweeper could not delete; will retry"),
            }
        }
    }
    deleted_jobs
}

/// Forgets an uncommitted job and deletes its stored pages; returns how many. Its id is
/// free again afterwards.
pub(crate) async fn abort_job(
    state: &State,
    tenant: &str,
    job: &str,
) -> Result<u32, crate::meta::MetaError> {
    let (meta, t, j) = (state.meta.clone(), tenant.to_string(), job.to_string());
    let keys = tokio::task::spawn_blocking(move || meta.forget_uncommitted(&t, &j))
        .await
        .expect("metadata task panicked")?;
    for key in &keys {
        for store in state.pipeline.copies_for(tenant) {
            // Gone already is fine; anything else is left for the store's own cleanup and said.
            if let Err(e) = store.delete(key).await {
                warn!(tenant, job, key, store = store.name(), error = %e, "could not delete a page of an aborted job");
            }
        }
    }
    Ok(keys.len() as u32)
}

/// Aborts uncommitted jobs whose upload began more than `ttl` ago (rows of versions that
/// did not record when a job began are left alone). Returns how many were aborted.
pub(crate) async fn collect_uncommitted(state: &State, now: i64, ttl: Duration) -> u32 {
    let meta = state.meta.clone();
    let Ok(Ok(tenants)) = tokio::task::spawn_blocking(move || meta.tenants()).await else {
        return 0;
    };
    let mut aborted = 0;
    for tenant in tenants {
        let (meta, t) = (state.meta.clone(), tenant.clone());
        let Ok(Ok(jobs)) = tokio::task::spawn_blocking(move || meta.jobs(&t)).await else {
            continue;
        };
        for (job, row) in jobs {
            let stale = row.created_unix > 0 && now - row.created_unix > ttl.as_secs() as i64;
            if row.committed || !stale {
                continue;
            }
            let detail = format!(
                "job={job} reason=uncommitted for more than {} s",
                ttl.as_secs()
            );
            let started = state
                .audit
                .append(
                    "uncommitted-collector",
                    "system",
                    "job.abort",
                    &tenant,
                    &detail,
                    "started",
                )
                .await;
            if let Err(e) = started {
                error!(error = %e, tenant, job, "cannot write the audit log; job not collected");
                continue;
            }
            match abort_job(state, &tenant, &job).await {
                Ok(n) => {
                    aborted += 1;
                    info!(tenant, job, pages = n, "uncommitted job collected");
                }
                Err(e) => warn!(tenant, job, error = %e, "could not collect an uncommitted job"),
            }
        }
    }
    aborted
}

/// Whether this node runs the sweeper now: with several nodes on one database, one at a time
/// (see [`crate::meta::MetaStore::lead`]); says so when it takes the work.
async fn leading(state: &State, was: &mut bool) -> bool {
    let meta = state.meta.clone();
    let now = match tokio::task::spawn_blocking(move || meta.lead("sweeper")).await {
        Ok(Ok(lead)) => lead,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot tell whether this node runs the sweeper; skipping this round");
            false
        }
        Err(e) => {
            error!(error = %e, "the sweeper's turn check failed");
            false
        }
    };
    if now && !*was {
        info!("this node runs the retention sweeper");
    }
    *was = now;
    now
}

/// Runs the sweeper every `interval` for as long as the server lives.
pub(crate) fn spawn(
    state: Arc<State>,
    interval: Duration,
    uncommitted_ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lead = false;
        loop {
            tick.tick().await;
            if !leading(&state, &mut lead).await {
                continue;
            }
            let now = state.clock.now_unix();
            sweep_once(&state, now).await;
            collect_uncommitted(&state, now, uncommitted_ttl).await;
        }
    })
}
