//! The audit trail: who did what, to which tenant, when, and with what outcome — kept so that
//! editing it, removing from it or restoring an older copy is detected.
//!
//! - [`record`]: one record, a JSON line whose SHA-256 covers the previous record's hash, so
//!   that each tenant's records form a chain (service-level events form one more);
//! - [`log`]: the file the server appends to, each record synced before the action it
//!   describes takes effect;
//! - [`trail`]: what keeps the chains, the log file or (several nodes) a shared database;
//! - [`checkpoint`]: a chain's head signed with Ed25519 by a key derived from one the vault
//!   holds, written write-once to the tenant's object store, away from the log's disk;
//! - [`verify`]: a pure verifier, fed lines and checkpoints, naming the first bad record.
//!
//! The format is specified in docs/AUDIT.md, and an independent verifier in Python checks
//! exported chains in the tests.

pub mod checkpoint;
pub mod lines;
pub mod log;
pub mod record;
pub mod trail;
pub mod verify;

pub use checkpoint::{AuditSigner, Checkpoint};
pub use lines::{Lines, LogLine};
pub use log::{AuditLog, Head, Opened};
pub use record::{Entry, Record, GENESIS};
pub use trail::{Trail, TrailLines};
pub use verify::{ChainVerifier, Problem, Report, Start};

/// The audit log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
