//! The audit trail: every administrative action, document read and support access is on
//! record — appended to its tenant's hash chain and synced — before it is carried out (a
//! `started` record), and again with its outcome. A request whose record cannot be written is
//! refused. Who, what, which tenant, why, and the outcome, with a UTC timestamp; never a
//! secret. The chain format and its checkpoints are `quire_audit`'s; `checkpoints` signs
//! chain heads and keeps them in the tenants' object stores, `verify` reads them back.

pub(crate) mod checkpoints;
pub(crate) mod verify;

use std::path::Path;
use std::sync::Mutex;

use quire_audit::{Entry, Opened};
use tracing::{error, warn};

/// The server's audit log.
#[derive(Debug)]
pub struct AuditLog {
    trail: Box<dyn quire_audit::Trail>,
    /// Chains whose stored checkpoints this process has compared with the log (once each).
    compared: Mutex<std::collections::HashSet<String>>,
}

impl AuditLog {
    /// The trail of a node whose metadata is in `meta`: the shared database's when it keeps
    /// one (several nodes, one chain per tenant), else `dir/audit.log`. A checkpoint falls
    /// due after `checkpoint_records` records of a chain.
    pub fn open_for(
        dir: &Path,
        meta: &dyn crate::meta::MetaStore,
        checkpoint_records: u64,
    ) -> Result<AuditLog, crate::ServeError> {
        let path = dir.join("audit.log");
        let Some(trail) = meta.audit_trail(checkpoint_records) else {
            return AuditLog::open(&path, checkpoint_records)
                .map_err(|source| crate::ServeError::AuditLog { path, source });
        };
        // A log file of a single-node setup would be continued by nobody: say so rather than
        // leave it behind unread.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            return Err(crate::ServeError::AuditTrail(format!(
                "{} holds the audit trail of a single-node setup, but the metadata is in a shared database, which keeps the trail of every node. Keep that file (it is the record of what happened before; `quire admin audit verify` on the old setup reads it) and move it out of the data directory, or use the single-node setup's metadata again",
                path.display()
            )));
        }
        Ok(AuditLog::over(trail))
    }

    /// The server's log over `trail`.
    fn over(trail: Box<dyn quire_audit::Trail>) -> AuditLog {
        AuditLog {
            trail,
            compared: Default::default(),
        }
    }

    /// Opens `path` (created with mode 0600 if missing); a checkpoint falls due after
    /// `checkpoint_records` records of one chain. Damage found on opening is logged.
    pub fn open(path: &Path, checkpoint_records: u64) -> std::io::Result<AuditLog> {
        let (log, opened) =
            quire_audit::AuditLog::open(path, checkpoint_records).map_err(|e| match e {
                quire_audit::AuditError::Io { source, .. } => source,
            })?;
        let Opened {
            torn_tail_bytes,
            unreadable_lines,
            ..
        } = opened;
        if torn_tail_bytes > 0 {
            warn!(path = %path.display(), bytes = torn_tail_bytes, "the audit log ended in a record cut short (a crash or a full disk while writing it); the incomplete record was removed: its action was refused, not carried out");
        }
        if unreadable_lines > 0 {
            error!(path = %path.display(), lines = unreadable_lines, "the audit log has lines that are not records: it was damaged or tampered with. Run `quire admin audit verify` for each tenant");
        }
        Ok(AuditLog::over(Box::new(log)))
    }

    /// Appends one record to `tenant`'s chain (empty: the service chain) and syncs it; the
    /// caller refuses the action on an error.
    pub fn record(
        &self,
        actor: &str,
        role: &str,
        action: &str,
        tenant: &str,
        detail: &str,
        outcome: &str,
    ) -> std::io::Result<()> {
        self.trail
            .record(Entry {
                actor,
                role,
                action,
                tenant,
                detail,
                outcome,
            })
            .map(drop)
    }

    /// [`AuditLog::record`] from async code (on a blocking thread, see `off_workers`).
    pub async fn append(
        self: &std::sync::Arc<Self>,
        actor: &str,
        role: &str,
        action: &str,
        tenant: &str,
        detail: &str,
        outcome: &str,
    ) -> std::io::Result<()> {
        let log = self.clone();
        let fields = [actor, role, action, tenant, detail, outcome].map(str::to_string);
        off_workers(move || {
            let [actor, role, action, tenant, detail, outcome] = &fields;
            log.record(actor, role, action, tenant, detail, outcome)
        })
        .await
    }

    /// How many records this process has written, whoever wrote them.
    pub fn records_written(&self) -> u64 {
        self.trail.records_written()
    }

    /// Whether `tenant`'s chain is yet to be compared with its stored checkpoints by this
    /// process (true once: the caller compares).
    pub(crate) fn first_comparison(&self, tenant: &str) -> bool {
        self.compared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string())
    }

    /// Where the chains are kept (for checkpoints and verification).
    pub fn chains(&self) -> &dyn quire_audit::Trail {
        self.trail.as_ref()
    }
}

/// Failed authentications, counted per source address and written as one audit record per
/// source and minute ([`AuthFailures::flush`]), so a scan or a misconfigured fleet is on the
/// record without one line per attempt.
#[derive(Debug, Default)]
pub struct AuthFailures {
    by_source: Mutex<std::collections::HashMap<std::net::IpAddr, (u64, String)>>,
}

/// How often [`AuthFailures`] are written out.
pub const AUTH_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

impl AuthFailures {
    /// Counts one failure from `source`, remembering the latest reason.
    pub fn note(&self, source: std::net::IpAddr, reason: &str) {
        let mut m = self.by_source.lock().expect("auth failures lock");
        let entry = m.entry(source).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = reason.chars().take(200).collect();
    }

    /// Writes one record per source counted since the last flush; returns how many.
    pub fn flush(&self, log: &AuditLog) -> std::io::Result<usize> {
        let taken = std::mem::take(&mut *self.by_source.lock().expect("auth failures lock"));
        for (source, (count, reason)) in &taken {
            log.record(
                &source.to_string(),
                "unauthenticated",
                "auth.failed",
                "",
                &format!("failures={count} last_reason={reason}"),
                "refused",
            )?;
        }
        Ok(taken.len())
    }
}

/// Runs `work`, which syncs the log, on a blocking thread: an fsync on an async worker stalls
/// every connection that worker serves.
pub(crate) async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// Runs `flush` (writing the failed authentications counted so far) every
/// [`AUTH_FAILURE_WINDOW`].
pub(crate) fn spawn_auth_failure_flush(
    flush: impl Fn() -> std::io::Result<usize> + Send + Sync + 'static,
) {
    let flush = std::sync::Arc::new(flush);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(AUTH_FAILURE_WINDOW);
        tick.tick().await;
        loop {
            tick.tick().await;
            let f = flush.clone();
            if let Err(e) = off_workers(move || f()).await {
                tracing::error!(error = %e, "cannot write failed authentications to the audit log");
            }
        }
    });
}
