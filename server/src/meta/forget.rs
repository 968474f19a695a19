//! What the metadata store forgets. A page row holds the page's name, size and plaintext
//! SHA-256: facts about a document that must not outlive it. So when a job's objects are
//! deleted (retention, delete-on-delivery) its page rows go in the same transaction that
//! marks it deleted, and when a tenant is shredded every page row of the tenant goes; the job
//! row keeps only counts and dates. Stores written by earlier versions, which kept the rows,
//! are purged when opened.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{db, job_key, JobRow, Meta, MetaError, JOBS, PAGES};

/// Removes every page row whose key starts with `prefix` (`tenant/job/` or `tenant/`).
fn remove_page_rows(txn: &WriteTransaction, prefix: &str) -> Result<usize, MetaError> {
    let mut pages = txn.open_table(PAGES).map_err(db)?;
    // '0' sorts right after '/', so this range is exactly the keys under the prefix.
    let end = format!("{}0", prefix.trim_end_matches('/'));
    let keys: Vec<String> = pages
        .range(prefix..end.as_str())
        .map_err(db)?
        .map(|item| item.map(|(k, _)| k.value().to_string()).map_err(db))
        .collect::<Result<_, _>>()?;
    for k in &keys {
        pages.remove(k.as_str()).map_err(db)?;
    }
    Ok(keys.len())
}

impl Meta {
    /// Marks the job's objects deleted at `at` (the first time wins) and removes its page rows.
    pub(super) fn delete_job_rows(
        &self,
        tenant: &str,
        job: &str,
        at: i64,
    ) -> Result<(), MetaError> {
        let key = job_key(tenant, job);
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(db)?;
            let mut row: JobRow = match jobs.get(key.as_str()).map_err(db)? {
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?,
                None => return Err(MetaError::NotFound(format!("job {job}"))),
            };
            row.deleted_unix.get_or_insert(at);
            let v = serde_json::to_vec(&row).expect("row serialises");
            jobs.insert(key.as_str(), v.as_slice()).map_err(db)?;
        }
        remove_page_rows(&txn, &format!("{key}/"))?;
        txn.commit().map_err(db)
    }

    /// Removes every page row of the tenant (after a shred); returns how many.
    pub(super) fn forget_tenant_pages(&self, tenant: &str) -> Result<usize, MetaError> {
        let txn = self.db.begin_write().map_err(db)?;
        let n = remove_page_rows(&txn, &format!("{tenant}/"))?;
        txn.commit().map_err(db)?;
        Ok(n)
    }

    /// Removes the page rows that earlier versions kept for jobs already deleted.
    pub(super) fn purge_deleted_pages(&self) -> Result<usize, MetaError> {
        let deleted: Vec<String> = {
            let txn = self.db.begin_read().map_err(db)?;
            let jobs = txn.open_table(JOBS).map_err(db)?;
            let mut out = Vec::new();
            for item in jobs.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let row: JobRow = serde_json::from_slice(v.value())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?;
                if row.deleted_unix.is_some() {
                    out.push(k.value().to_string());
                }
            }
            out
        };
        let txn = self.db.begin_write().map_err(db)?;
        let mut n = 0;
        for key in deleted {
            n += remove_page_rows(&txn, &format!("{key}/"))?;
        }
        txn.commit().map_err(db)?;
        Ok(n)
    }
}
