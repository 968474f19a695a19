//! The audit log: JSON lines for every administrative action, document read and support
//! access, appended and synced before the action is carried out (a `started` line) and again
//! with its outcome. A request whose line cannot be written is refused. Who, what, which
//! tenant, why, and the outcome, with a UTC timestamp. Never a secret.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// An append-only audit log file.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<std::fs::File>,
    /// Records written since the log was opened (for metrics).
    written: std::sync::atomic::AtomicU64,
}

#[derive(Serialize)]
struct Entry<'a> {
    ts_unix_ms: u128,
    actor: &'a str,
    role: &'a str,
    action: &'a str,
    tenant: &'a str,
    detail: &'a str,
    outcome: &'a str,
}

impl AuditLog {
    /// Opens `path` for appending (created with mode 0600 if missing).
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(AuditLog {
            file: Mutex::new(file),
            written: Default::default(),
        })
    }

    /// Appends one entry and syncs it to disk; the caller refuses the action on an error.
    pub fn record(
        &self,
        actor: &str,
        role: &str,
        action: &str,
        tenant: &str,
        detail: &str,
        outcome: &str,
    ) -> std::io::Result<()> {
        let ts_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let line = serde_json::to_string(&Entry {
            ts_unix_ms,
            actor,
            role,
            action,
            tenant,
            detail,
            outcome,
        })
        .expect("entry serialises");
        let mut f = self.file.lock().expect("audit lock poisoned");
        writeln!(f, "{line}").and_then(|_| f.sync_data())?;
        self.written
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// How many records this process has written, whoever wrote them.
    pub fn records_written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
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

/// Runs `flush` (writing the failed authentications counted so far) every
/// [`AUTH_FAILURE_WINDOW`].
pub(crate) fn spawn_auth_failure_flush(
    flush: impl Fn() -> std::io::Result<usize> + Send + 'static,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(AUTH_FAILURE_WINDOW);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = flush() {
                tracing::error!(error = %e, "cannot write failed authentications to the audit log");
            }
        }
    });
}
