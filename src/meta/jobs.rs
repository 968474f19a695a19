//! Who owns a job, and taking back a job that will never be committed.
//!
//! A job id belongs to the device that first stored a page under it (or opened it for
//! pushing): another device pushing, committing or resuming the same id is refused at once,
//! so two scanners that picked the same id cannot mix their pages into one job or leave it
//! stuck between them. Rows written before owners existed have none and stay open to the
//! tenant's devices.

use redb::ReadableTable;

use super::{db, job_key, now_unix, JobRow, Meta, MetaError, MetaStore, JOBS, PAGES};

/// Whether `device` may go on with the job in `row`: `Ok(true)` if the row must first be
/// claimed for it (no owner yet, not committed), `Ok(false)` if it is the device's already
/// (or a committed job of an older version, which has no owner), an error if it is another's.
fn needs_claim(row: &JobRow, job: &str, device: &str) -> Result<bool, MetaError> {
    match &row.owner {
        Some(owner) if owner != device => Err(MetaError::Owned {
            job: job.to_string(),
            owner: owner.clone(),
        }),
        Some(_) => Ok(false),
        None => Ok(!row.committed),
    }
}

impl Meta {
    /// Claims `job` for `device` (creating its row if new) in one transaction; refuses a
    /// job another device owns.
    pub(super) fn claim(&self, tenant: &str, job: &str, device: &str) -> Result<JobRow, MetaError> {
        // Every page of a job asks; only the first needs to write. A read is enough to see
        // that the job is already this device's (or committed, or another's).
        if let Some(row) = self.job(tenant, job)? {
            if !needs_claim(&row, job, device)? {
                return Ok(row);
            }
        }
        let txn = self.db.begin_write().map_err(db)?;
        let row = {
            let mut jobs = txn.open_table(JOBS).map_err(db)?;
            let key = job_key(tenant, job);
            let mut row: JobRow = match jobs.get(key.as_str()).map_err(db)? {
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?,
                None => JobRow {
                    created_unix: now_unix(),
                    ..JobRow::default()
                },
            };
            // Read again inside the transaction: another device may have claimed it since.
            if !needs_claim(&row, job, device)? {
                return Ok(row);
            }
            row.owner = Some(device.to_string());
            let v = serde_json::to_vec(&row).expect("row serialises");
            jobs.insert(key.as_str(), v.as_slice()).map_err(db)?;
            row
        };
        txn.commit().map_err(db)?;
        Ok(row)
    }

    /// Removes an uncommitted job's rows (the job and its pages) and returns the object keys
    /// of its pages, for the caller to delete from the store. A committed job is refused.
    pub(super) fn forget_uncommitted(
        &self,
        tenant: &str,
        job: &str,
    ) -> Result<Vec<String>, MetaError> {
        let txn = self.db.begin_write().map_err(db)?;
        let keys = {
            let mut jobs = txn.open_table(JOBS).map_err(db)?;
            let key = job_key(tenant, job);
            let row: JobRow = match jobs.get(key.as_str()).map_err(db)? {
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?,
                None => return Err(MetaError::NotFound(format!("job {job}"))),
            };
            if row.committed {
                return Err(MetaError::Committed(job.to_string()));
            }
            jobs.remove(key.as_str()).map_err(db)?;
            let mut pages = txn.open_table(PAGES).map_err(db)?;
            let (start, end) = (format!("{tenant}/{job}/"), format!("{tenant}/{job}0"));
            let mut rows = Vec::new();
            for item in pages.range(start.as_str()..end.as_str()).map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let page: super::PageRow = serde_json::from_slice(v.value())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?;
                rows.push((k.value().to_string(), page.object_key));
            }
            for (k, _) in &rows {
                pages.remove(k.as_str()).map_err(db)?;
            }
            rows.into_iter().map(|(_, o)| o).collect()
        };
        txn.commit().map_err(db)?;
        Ok(keys)
    }
}
