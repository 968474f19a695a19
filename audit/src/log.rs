//! The audit log file: chained records appended and synced one at a time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::lines::{Lines, LogLine};
use crate::record::{parse_line, Entry, Line, Record, GENESIS};
use crate::AuditError;

/// A chain's newest record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

#[derive(Debug, Default)]
struct Chain {
    head: Option<Head>,
    /// The newest record a checkpoint covers (as far as this process knows).
    signed: u64,
}

#[derive(Debug)]
struct Inner {
    file: File,
    /// Bytes of complete records in the file: a failed append is cut back to this.
    len: u64,
    chains: HashMap<String, Chain>,
}

/// What opening the log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Chained records read.
    pub records: u64,
    /// Records from before chaining.
    pub legacy_records: u64,
    /// Bytes of an incomplete last line (a write cut short) that were removed.
    pub torn_tail_bytes: u64,
    /// Lines that are not records (damage or tampering; `audit verify` names them).
    pub unreadable_lines: u64,
}

/// An append-only audit log of per-tenant hash chains. Every [`AuditLog::record`] is on disk
/// (`fdatasync`) before it returns, and records of one chain are written in chain order.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
    written: AtomicU64,
    /// Records since the last checkpoint of some chain reached the threshold.
    due: AtomicBool,
    checkpoint_every: u64,
}

impl AuditLog {
    /// Opens `path` (created with mode 0600 if missing), reads every chain's head, and
    /// removes an incomplete last line. A checkpoint is due after `checkpoint_every` records
    /// of a chain.
    pub fn open(path: &Path, checkpoint_every: u64) -> Result<(AuditLog, Opened), AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mut opened = Opened::default();
        let mut chains: HashMap<String, Chain> = HashMap::new();
        // Only a regular file has records to read (not, say, a device standing in for one).
        if !file.metadata().map_err(io)?.is_file() {
            return Ok((
                AuditLog::new(path, file, 0, chains, checkpoint_every),
                opened,
            ));
        }
        let mut lines = Lines::new(BufReader::new(&file));
        let mut torn_at = None;
        for line in lines.by_ref() {
            match line.map_err(io)? {
                LogLine::Line { bytes, .. } => match parse_line(&bytes) {
                    Ok(Line::Chained(r)) => {
                        let chain = chains.entry(r.tenant.clone()).or_default();
                        chain.head = Some(Head {
                            seq: r.seq,
                            hash: r.hash,
                        });
                        chain.signed = r.seq;
                        opened.records += 1;
                    }
                    Ok(Line::Legacy { .. }) => opened.legacy_records += 1,
                    Err(_) => opened.unreadable_lines += 1,
                },
                LogLine::TooLong { .. } => opened.unreadable_lines += 1,
                LogLine::TornTail { offset, .. } => torn_at = Some(offset),
            }
        }
        let mut len = lines.offset();
        if let Some(offset) = torn_at {
            let total = file.metadata().map_err(io)?.len();
            opened.torn_tail_bytes = total - offset;
            file.set_len(offset).map_err(io)?;
            file.sync_data().map_err(io)?;
            len = offset;
        }
        Ok((
            AuditLog::new(path, file, len, chains, checkpoint_every),
            opened,
        ))
    }

    fn new(
        path: &Path,
        file: File,
        len: u64,
        chains: HashMap<String, Chain>,
        checkpoint_every: u64,
    ) -> AuditLog {
        AuditLog {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner { file, len, chains }),
            written: AtomicU64::new(0),
            due: AtomicBool::new(false),
            checkpoint_every: checkpoint_every.max(1),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` to its tenant's chain and syncs it; the caller refuses the action on
    /// an error (nothing of a failed record stays in the file).
    pub fn record(&self, entry: Entry<'_>) -> std::io::Result<Head> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, prev) = match inner.chains.get(entry.tenant).and_then(|c| c.head) {
            Some(h) => (h.seq + 1, h.hash),
            None => (1, GENESIS),
        };
        let record = Record::chain(entry, seq, now, prev);
        let mut line = record.to_line().into_bytes();
        line.push(b'\n');
        let written = inner
            .file
            .write_all(&line)
            .and_then(|_| inner.file.sync_data());
        if let Err(e) = written {
            // Leave no partial or unsynced record for the next one to chain after.
            let len = inner.len;
            let _ = inner.file.set_len(len);
            return Err(e);
        }
        inner.len += line.len() as u64;
        let head = Head {
            seq,
            hash: record.hash,
        };
        let chain = inner.chains.entry(record.tenant).or_default();
        chain.head = Some(head);
        if seq - chain.signed >= self.checkpoint_every {
            self.due.store(true, Ordering::Release);
        }
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(head)
    }

    /// `tenant`'s newest record.
    pub fn head(&self, tenant: &str) -> Option<Head> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.chains.get(tenant).and_then(|c| c.head)
    }

    /// How many records this process has written.
    pub fn records_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Whether some chain has reached the checkpoint threshold (and clears the flag).
    pub fn take_due(&self) -> bool {
        self.due.swap(false, Ordering::AcqRel)
    }

    /// The heads of chains with records no checkpoint covers yet.
    pub fn unsigned_heads(&self) -> Vec<(String, Head)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .chains
            .iter()
            .filter_map(|(t, c)| c.head.filter(|h| h.seq > c.signed).map(|h| (t.clone(), h)))
            .collect()
    }

    /// Notes that a checkpoint now covers `tenant`'s chain up to `seq`.
    pub fn signed(&self, tenant: &str, seq: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = inner.chains.get_mut(tenant) {
            c.signed = c.signed.max(seq);
        }
    }

    /// The most records any chain has that no checkpoint covers (the checkpoint lag).
    pub fn unsigned_records(&self) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .chains
            .values()
            .filter_map(|c| c.head.map(|h| h.seq.saturating_sub(c.signed)))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{ChainVerifier, Start};

    fn entry(tenant: &str) -> Entry<'_> {
        Entry {
            actor: "admin",
            role: "service-admin",
            action: "device.create",
            tenant,
            detail: "",
            outcome: "ok",
        }
    }

    fn verify(path: &Path, tenant: &str) -> crate::verify::Report {
        let mut v = ChainVerifier::new(tenant, Start::Genesis, vec![]);
        for l in Lines::new(BufReader::new(File::open(path).unwrap())) {
            v.feed(&l.unwrap());
        }
        v.finish()
    }

    #[test]
    fn chains_continue_across_reopening_and_stay_apart_by_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, opened) = AuditLog::open(&path, 1000).unwrap();
        assert_eq!(opened, Opened::default());
        log.record(entry("acme")).unwrap();
        log.record(entry("")).unwrap();
        assert_eq!(log.record(entry("acme")).unwrap().seq, 2);
        drop(log);
        let (log, opened) = AuditLog::open(&path, 1000).unwrap();
        assert_eq!(opened.records, 3);
        assert_eq!(log.record(entry("acme")).unwrap().seq, 3);
        assert_eq!(log.record(entry("")).unwrap().seq, 2);
        for tenant in ["acme", ""] {
            let report = verify(&path, tenant);
            assert_eq!(report.problem, None, "{tenant}");
        }
        assert_eq!(verify(&path, "acme").head_seq, 3);
    }

    #[test]
    fn a_torn_last_line_is_removed_and_the_chain_goes_on_from_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = AuditLog::open(&path, 1000).unwrap();
        log.record(entry("acme")).unwrap();
        drop(log);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let torn = b"{\"v\":2,\"seq\":2,\"ts_un";
        f.write_all(torn).unwrap();
        let (log, opened) = AuditLog::open(&path, 1000).unwrap();
        assert_eq!(opened.torn_tail_bytes, torn.len() as u64);
        assert_eq!(log.record(entry("acme")).unwrap().seq, 2);
        assert_eq!(verify(&path, "acme").problem, None);
    }

    #[test]
    fn legacy_records_stay_readable_before_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "{\"ts_unix_ms\":1,\"actor\":\"a\",\"role\":\"r\",\"action\":\"x\",\"tenant\":\"acme\",\"detail\":\"\",\"outcome\":\"ok\"}\n").unwrap();
        let (log, opened) = AuditLog::open(&path, 1000).unwrap();
        assert_eq!(opened.legacy_records, 1);
        assert_eq!(log.record(entry("acme")).unwrap().seq, 1);
        let report = verify(&path, "acme");
        assert_eq!((report.problem, report.legacy_records), (None, 1));
    }

    #[test]
    fn a_checkpoint_becomes_due_after_the_threshold_and_lag_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = AuditLog::open(&dir.path().join("audit.log"), 3).unwrap();
        log.record(entry("acme")).unwrap();
        log.record(entry("acme")).unwrap();
        assert!(!log.take_due());
        log.record(entry("acme")).unwrap();
        assert!(log.take_due());
        assert_eq!(log.unsigned_records(), 3);
        assert_eq!(log.unsigned_heads()[0].1.seq, 3);
        log.signed("acme", 3);
        assert_eq!(log.unsigned_records(), 0);
        assert!(log.unsigned_heads().is_empty());
    }

    #[test]
    fn concurrent_writers_keep_every_chain_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = AuditLog::open(&path, 1000).unwrap();
        std::thread::scope(|s| {
            for t in ["a", "b", "a", "b"] {
                let log = &log;
                s.spawn(move || {
                    for _ in 0..50 {
                        log.record(entry(t)).unwrap();
                    }
                });
            }
        });
        for t in ["a", "b"] {
            let r = verify(&path, t);
            assert_eq!((r.problem, r.head_seq), (None, 100));
        }
    }
}
