//! Where a trail's chains are kept: [`Trail`] is what the server needs of it, so that one
//! node's log file and a database shared by several nodes serve the same checkpoints,
//! verification and export.

use std::path::Path;

use crate::lines::{Lines, LogLine};
use crate::log::{AuditLog, Head};
use crate::record::Entry;

/// A tenant's lines in chain order, read lazily (a trail can be large).
pub type TrailLines = Box<dyn Iterator<Item = std::io::Result<LogLine>> + Send>;

/// A place that keeps per-tenant audit chains. Every [`Trail::record`] is durable before it
/// returns, and the records of one chain are ordered by the place itself, so that several
/// writers (threads, or nodes sharing a database) keep each tenant's chain one chain.
pub trait Trail: Send + Sync + std::fmt::Debug {
    /// Appends `entry` to its tenant's chain; on an error nothing of it is kept.
    fn record(&self, entry: Entry<'_>) -> std::io::Result<Head>;

    /// `tenant`'s newest record as kept now (not as this process last wrote it).
    fn head(&self, tenant: &str) -> std::io::Result<Option<Head>>;

    /// The heads of chains with records no checkpoint covers yet.
    fn unsigned_heads(&self) -> std::io::Result<Vec<(String, Head)>>;

    /// Notes that a checkpoint now covers `tenant`'s chain up to `seq`.
    fn signed(&self, tenant: &str, seq: u64) -> std::io::Result<()>;

    /// The lines holding `tenant`'s chain, in order. A reader may also get other tenants'
    /// lines (a log file interleaves them), which [`crate::ChainVerifier`] skips.
    fn lines(&self, tenant: &str) -> std::io::Result<TrailLines>;

    /// How many records this process has written.
    fn records_written(&self) -> u64;

    /// Whether this process has written enough records since the last checkpoint of their
    /// chain for one to be due (clears the flag).
    fn take_due(&self) -> bool;

    /// The most records any chain has that no checkpoint covers, as last seen here.
    fn unsigned_records(&self) -> u64;
}

impl Trail for AuditLog {
    fn record(&self, entry: Entry<'_>) -> std::io::Result<Head> {
        AuditLog::record(self, entry)
    }

    fn head(&self, tenant: &str) -> std::io::Result<Option<Head>> {
        Ok(AuditLog::head(self, tenant))
    }

    fn unsigned_heads(&self) -> std::io::Result<Vec<(String, Head)>> {
        Ok(AuditLog::unsigned_heads(self))
    }

    fn signed(&self, tenant: &str, seq: u64) -> std::io::Result<()> {
        AuditLog::signed(self, tenant, seq);
        Ok(())
    }

    fn lines(&self, _tenant: &str) -> std::io::Result<TrailLines> {
        Ok(Box::new(file_lines(self.path())?))
    }

    fn records_written(&self) -> u64 {
        AuditLog::records_written(self)
    }

    fn take_due(&self) -> bool {
        AuditLog::take_due(self)
    }

    fn unsigned_records(&self) -> u64 {
        AuditLog::unsigned_records(self)
    }
}

/// Every line of the log file at `path`.
fn file_lines(
    path: &Path,
) -> std::io::Result<impl Iterator<Item = std::io::Result<LogLine>> + Send> {
    Ok(Lines::new(std::io::BufReader::new(std::fs::File::open(
        path,
    )?)))
}
