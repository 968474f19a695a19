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
        writeln!(f, "{line}").and_then(|_| f.sync_data())
    }
}
