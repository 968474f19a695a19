//! The audit trail in PostgreSQL, so that a tenant's records form one chain whichever node
//! wrote them. The order is the database's: an append locks the chain's head row, so two
//! nodes appending to one chain take turns, and the timestamp is the database's clock at
//! that moment (one clock for the whole chain, however the nodes' clocks drift).
//!
//! Each record is kept as the exact JSON line a log file would hold, so verification, export
//! and the independent verifier read both alike. The table refuses updates and deletions
//! (a trigger); a change made around that is still found by the chain and the checkpoints.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use quire_audit::record::MAX_LINE_LEN;
use quire_audit::{Entry, Head, LogLine, Record, Trail, TrailLines, GENESIS};

use super::{pg, PgMeta};
use crate::meta::MetaError;

/// Records read per query when reading a chain back (at most 16 MiB held at once: each line
/// is fetched only up to `MAX_LINE_LEN`).
const PAGE: i64 = 256;

/// The audit chains of every tenant, in the shared database.
#[derive(Debug)]
pub struct PgTrail {
    meta: PgMeta,
    checkpoint_every: u64,
    written: AtomicU64,
    due: AtomicBool,
    /// Records this process appended to each chain since it last saw the chain signed.
    pending: Mutex<HashMap<String, u64>>,
    /// The largest unsigned stretch seen by the last [`Trail::unsigned_heads`].
    unsigned: AtomicU64,
}

impl PgTrail {
    pub(super) fn new(meta: PgMeta, checkpoint_every: u64) -> PgTrail {
        PgTrail {
            meta,
            checkpoint_every: checkpoint_every.max(1),
            written: AtomicU64::new(0),
            due: AtomicBool::new(false),
            pending: Mutex::default(),
            unsigned: AtomicU64::new(0),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A database failure as the I/O error the trail's callers handle (they refuse the action).
fn io(e: MetaError) -> std::io::Error {
    std::io::Error::other(format!("the audit trail in the database: {e}"))
}

fn hash_of(bytes: &[u8]) -> Result<[u8; 32], MetaError> {
    bytes
        .try_into()
        .map_err(|_| MetaError::Db("an audit chain head has a hash that is not 32 bytes".into()))
}

fn head_of(seq: i64, hash: &[u8]) -> Result<Option<Head>, MetaError> {
    Ok((seq > 0).then_some(Head {
        seq: seq as u64,
        hash: hash_of(hash)?,
    }))
}

impl Trail for PgTrail {
    fn record(&self, entry: Entry<'_>) -> std::io::Result<Head> {
        let fields = [
            entry.actor,
            entry.role,
            entry.action,
            entry.tenant,
            entry.detail,
            entry.outcome,
        ]
        .map(str::to_string);
        let head = self
            .meta
            .with(move |mut c| async move {
                let [actor, role, action, tenant, detail, outcome] = &fields;
                let tx = c.transaction().await.map_err(pg)?;
                // Takes the head row's lock (creating the chain's row on its first record):
                // whoever appends next to this chain waits for this transaction.
                let row = tx
                    .query_one(
                        "INSERT INTO audit_heads AS h (tenant, seq, hash, signed_seq) \
                         VALUES ($1, 0, $2, 0) \
                         ON CONFLICT (tenant) DO UPDATE SET tenant = h.tenant \
                         RETURNING h.seq, h.hash, \
                           (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                        &[tenant, &GENESIS.as_slice()],
                    )
                    .await
                    .map_err(pg)?;
                let (seq, prev, now): (i64, Vec<u8>, i64) = (row.get(0), row.get(1), row.get(2));
                let entry = Entry {
                    actor,
                    role,
                    action,
                    tenant,
                    detail,
                    outcome,
                };
                let record = Record::chain(entry, seq as u64 + 1, now as u64, hash_of(&prev)?);
                tx.execute(
                    "WITH r AS (INSERT INTO audit_records (tenant, seq, line) VALUES ($1, $2, $3)) \
                     UPDATE audit_heads SET seq = $2, hash = $4 WHERE tenant = $1",
                    &[
                        tenant,
                        &(record.seq as i64),
                        &record.to_line(),
                        &record.hash.as_slice(),
                    ],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)?;
                Ok(Head {
                    seq: record.seq,
                    hash: record.hash,
                })
            })
            .map_err(io)?;
        self.written.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.pending();
        let n = pending.entry(entry.tenant.to_string()).or_default();
        *n += 1;
        if *n >= self.checkpoint_every {
            self.due.store(true, Ordering::Release);
        }
        Ok(head)
    }

    fn head(&self, tenant: &str) -> std::io::Result<Option<Head>> {
        let tenant = tenant.to_string();
        self.meta
            .with(move |c| async move {
                match c
                    .query_opt(
                        "SELECT seq, hash FROM audit_heads WHERE tenant = $1",
                        &[&tenant],
                    )
                    .await
                    .map_err(pg)?
                {
                    Some(row) => head_of(row.get(0), row.get(1)),
                    None => Ok(None),
                }
            })
            .map_err(io)
    }

    fn unsigned_heads(&self) -> std::io::Result<Vec<(String, Head)>> {
        let rows = self
            .meta
            .with(move |c| async move {
                let rows = c
                    .query(
                        "SELECT tenant, seq, hash, signed_seq FROM audit_heads \
                         WHERE seq > signed_seq",
                        &[],
                    )
                    .await
                    .map_err(pg)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let (seq, signed): (i64, i64) = (row.get(1), row.get(3));
                    if let Some(head) = head_of(seq, row.get(2))? {
                        out.push((row.get::<_, String>(0), head, (seq - signed) as u64));
                    }
                }
                Ok(out)
            })
            .map_err(io)?;
        let most = rows.iter().map(|r| r.2).max().unwrap_or(0);
        self.unsigned.store(most, Ordering::Relaxed);
        Ok(rows.into_iter().map(|(t, h, _)| (t, h)).collect())
    }

    fn signed(&self, tenant: &str, seq: u64) -> std::io::Result<()> {
        let t = tenant.to_string();
        self.meta
            .with(move |c| async move {
                c.execute(
                    "UPDATE audit_heads SET signed_seq = GREATEST(signed_seq, $2) \
                     WHERE tenant = $1",
                    &[&t, &(seq as i64)],
                )
                .await
                .map_err(pg)
            })
            .map_err(io)?;
        self.pending().remove(tenant);
        Ok(())
    }

    fn lines(&self, tenant: &str) -> std::io::Result<TrailLines> {
        Ok(Box::new(ChainReader {
            meta: self.meta.clone(),
            tenant: tenant.to_string(),
            after: 0,
            page: Vec::new().into_iter(),
            done: false,
        }))
    }

    fn records_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn take_due(&self) -> bool {
        self.due.swap(false, Ordering::AcqRel)
    }

    fn unsigned_records(&self) -> u64 {
        self.unsigned.load(Ordering::Relaxed)
    }
}

/// Reads one chain a page at a time, in sequence order. A line longer than a record can be
/// is not fetched (the database holds something other than what Quire wrote).
struct ChainReader {
    meta: PgMeta,
    tenant: String,
    after: i64,
    page: std::vec::IntoIter<LogLine>,
    done: bool,
}

impl ChainReader {
    fn next_page(&mut self) -> Result<Vec<LogLine>, MetaError> {
        let (tenant, after) = (self.tenant.clone(), self.after);
        self.meta.with(move |c| async move {
            let rows = c
                .query(
                    "SELECT seq, CASE WHEN octet_length(line) <= $3 THEN line END \
                     FROM audit_records WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $4",
                    &[&tenant, &after, &(MAX_LINE_LEN as i32), &PAGE],
                )
                .await
                .map_err(pg)?;
            Ok(rows
                .iter()
                .map(|row| {
                    let number = row.get::<_, i64>(0) as u64;
                    match row.get::<_, Option<String>>(1) {
                        Some(line) => LogLine::Line {
                            number,
                            bytes: line.into_bytes(),
                        },
                        None => LogLine::TooLong { number },
                    }
                })
                .collect())
        })
    }
}

impl Iterator for ChainReader {
    type Item = std::io::Result<LogLine>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(line) = self.page.next() {
            return Some(Ok(line));
        }
        if self.done {
            return None;
        }
        match self.next_page() {
            Ok(lines) => {
                self.done = (lines.len() as i64) < PAGE;
                if let Some(LogLine::Line { number, .. } | LogLine::TooLong { number }) =
                    lines.last()
                {
                    self.after = *number as i64;
                }
                self.page = lines.into_iter();
                self.page.next().map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(io(e)))
            }
        }
    }
}
