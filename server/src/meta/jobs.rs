//! Who owns a job, and taking back a job that will never be committed.
//!
//! A job id belongs to the device that first stored a page under it (or opened it for
//! pushing), and to that device's upload (the [`UploadId`] its client keeps across resumes):
//! another device, or a second process of the same device, pushing, committing or resuming
//! the same id is refused at once, so two pushes that picked the same id cannot mix their
//! pages into one job or leave it stuck between them. Rows written before owners existed
//! have none and stay open to the tenant's devices; a job an older client opened (no upload)
//! is bound to the first upload that resumes it.

use quire_codecs::wire::UploadId;
use redb::{ReadableDatabase, ReadableTable};

use quire_codecs::wire::PageEntry;

use super::{
    db, job_key, now_unix, page_row_key, JobRow, Meta, MetaError, MetaStore, PageRow, JOBS, PAGES,
};

/// A page the pipeline stored, to be recorded (see [`MetaStore::record_pages`]).
#[derive(Debug, Clone)]
pub struct StoredPage {
    pub tenant: String,
    pub job: String,
    pub entry: PageEntry,
    pub object_key: String,
    pub stored_bytes: u64,
    pub upload: Option<UploadId>,
    /// The device whose upload pushed the page. When set, the page is recorded only while
    /// that device is enabled and its upload holds the job uncommitted, checked in the write
    /// itself: a connection that remembers its open jobs can skip reading them per page.
    pub holder: Option<String>,
}

/// Whether a page held by `holder` may be recorded into the job in `row` (see
/// [`StoredPage::holder`]): the device is enabled, owns the job for this upload, and the job
/// is not committed.
pub(super) fn still_held(
    row: Option<&JobRow>,
    device: Option<&crate::auth::DeviceRecord>,
    holder: &str,
    upload: Option<&str>,
) -> bool {
    let enabled = device.is_some_and(|d| d.state == quire_codecs::wire::DeviceState::Enabled);
    let held = row.is_some_and(|r| {
        !r.committed && r.owner.as_deref() == Some(holder) && r.upload.as_deref() == upload
    });
    enabled && held
}

/// What a page reads before it is stored (see [`MetaStore::page_context`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageContext {
    pub device: Option<crate::auth::DeviceRecord>,
    pub job: Option<JobRow>,
    pub recorded: bool,
}

/// Whether `device`'s `upload` holds the job already, so that no claim need be written:
/// `Ok(false)` when it must be claimed first, an error when another device or upload owns it.
pub fn held_by(
    row: &JobRow,
    job: &str,
    device: &str,
    upload: Option<UploadId>,
) -> Result<bool, MetaError> {
    let upload = upload.map(|u| u.to_hex());
    needs_claim(row, job, device, upload.as_deref()).map(|claim| !claim)
}

/// What committing a job checks (see [`MetaStore::commit_view`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitView {
    /// The job's row; `None` if nothing was ever pushed to it.
    pub job: Option<JobRow>,
    /// Its stored pages, by index.
    pub pages: Vec<PageEntry>,
    /// Indexes of pages another upload stored.
    pub foreign: Vec<u32>,
}

impl PageRow {
    /// The page as the manifest and the job status give it.
    pub(super) fn entry(self, tenant: &str, job: &str, index: u32) -> Result<PageEntry, MetaError> {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&self.sha256, &mut sha256).map_err(|_| {
            MetaError::Corrupt(format!("page {}", page_row_key(tenant, job, index)))
        })?;
        Ok(PageEntry {
            index,
            name: self.name,
            size: self.size,
            sha256,
        })
    }
}

/// Whether `device`'s `upload` may go on with the job in `row`: `Ok(true)` if the row must
/// first be claimed for it (no owner or no upload yet, not committed), `Ok(false)` if it is
/// this upload's already (or committed by this device, or a committed job of an older
/// version, which has no owner), an error if it is another device's or another upload's.
pub(super) fn needs_claim(
    row: &JobRow,
    job: &str,
    device: &str,
    upload: Option<&str>,
) -> Result<bool, MetaError> {
    match &row.owner {
        Some(owner) if owner != device => Err(MetaError::Owned {
            job: job.to_string(),
            owner: owner.clone(),
        }),
        // A committed job cannot change any more; re-opening or committing it again is
        // harmless, whichever upload asks.
        Some(_) if row.committed => Ok(false),
        Some(_) => match (row.upload.as_deref(), upload) {
            (Some(mine), Some(theirs)) if mine == theirs => Ok(false),
            (None, None) => Ok(false),
            (None, Some(_)) => Ok(true),
            (Some(_), _) => Err(MetaError::OtherUpload {
                job: job.to_string(),
            }),
        },
        None => Ok(!row.committed),
    }
}

impl Meta {
    /// Claims `job` for `device`'s `upload` (creating its row if new) in one transaction;
    /// refuses a job another device or another upload owns.
    pub(super) fn claim(
        &self,
        tenant: &str,
        job: &str,
        device: &str,
        upload: Option<UploadId>,
    ) -> Result<JobRow, MetaError> {
        let upload = upload.map(|u| u.to_hex());
        // Every page of a job asks; only the first needs to write. A read is enough to see
        // that the job is already this upload's (or committed, or another's).
        if let Some(row) = self.job(tenant, job)? {
            if !needs_claim(&row, job, device, upload.as_deref())? {
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
            // Read again inside the transaction: another upload may have claimed it since.
            if !needs_claim(&row, job, device, upload.as_deref())? {
                return Ok(row);
            }
            row.owner = Some(device.to_string());
            row.upload = upload;
            let v = serde_json::to_vec(&row).expect("row serialises");
            jobs.insert(key.as_str(), v.as_slice()).map_err(db)?;
            row
        };
        txn.commit().map_err(db)?;
        Ok(row)
    }

    /// Records stored pages in one transaction (creating job records where needed for pages
    /// without a holder); returns the positions of pages refused because their holder no
    /// longer holds the job (see [`StoredPage::holder`]).
    pub(super) fn record_pages(&self, pages: &[StoredPage]) -> Result<Vec<usize>, MetaError> {
        let txn = self.db.begin_write().map_err(db)?;
        let mut refused = Vec::new();
        {
            let mut jobs = txn.open_table(JOBS).map_err(db)?;
            let mut rows = txn.open_table(PAGES).map_err(db)?;
            let devices = txn.open_table(super::DEVICES).map_err(db)?;
            for (at, p) in pages.iter().enumerate() {
                let jk = job_key(&p.tenant, &p.job);
                let upload = p.upload.map(|u| u.to_hex());
                let row: Option<JobRow> = match jobs.get(jk.as_str()).map_err(db)? {
                    Some(v) => Some(
                        serde_json::from_slice(v.value())
                            .map_err(|e| MetaError::Corrupt(e.to_string()))?,
                    ),
                    None => None,
                };
                if let Some(holder) = &p.holder {
                    let device = match devices.get(holder.as_str()).map_err(db)? {
                        Some(v) => Some(super::devices::decode_device(holder, v.value())?),
                        None => None,
                    };
                    if !still_held(row.as_ref(), device.as_ref(), holder, upload.as_deref()) {
                        refused.push(at);
                        continue;
                    }
                } else if row.is_none() {
                    let fresh = serde_json::to_vec(&JobRow {
                        created_unix: now_unix(),
                        ..JobRow::default()
                    })
                    .expect("row serialises");
                    jobs.insert(jk.as_str(), fresh.as_slice()).map_err(db)?;
                }
                let row = PageRow {
                    name: p.entry.name.clone(),
                    size: p.entry.size,
                    sha256: hex::encode(p.entry.sha256),
                    object_key: p.object_key.clone(),
                    stored_bytes: p.stored_bytes,
                    upload,
                };
                let value = serde_json::to_vec(&row).expect("row serialises");
                let key = page_row_key(&p.tenant, &p.job, p.entry.index);
                rows.insert(key.as_str(), value.as_slice()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)?;
        Ok(refused)
    }

    /// The page rows of a job, by index.
    pub(super) fn page_rows(
        &self,
        tenant: &str,
        job: &str,
    ) -> Result<Vec<(u32, PageRow)>, MetaError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(PAGES).map_err(db)?;
        let start = format!("{tenant}/{job}/");
        let end = format!("{tenant}/{job}0"); // '0' sorts right after '/'
        let mut out = Vec::new();
        for item in t.range(start.as_str()..end.as_str()).map_err(db)? {
            let (k, v) = item.map_err(db)?;
            let key = k.value();
            let index: u32 = key[start.len()..]
                .parse()
                .map_err(|_| MetaError::Corrupt(format!("page key {key}")))?;
            let row: PageRow =
                serde_json::from_slice(v.value()).map_err(|e| MetaError::Corrupt(e.to_string()))?;
            out.push((index, row));
        }
        Ok(out)
    }

    /// The job's row and pages, and the indexes of the pages that an upload other than the
    /// job's stored. Pages of older versions and older clients name no upload and count as
    /// the job's own.
    pub(super) fn commit_view(&self, tenant: &str, job: &str) -> Result<CommitView, MetaError> {
        let row = self.job(tenant, job)?;
        let bound = row.as_ref().map(|r| r.upload.clone());
        let mut view = CommitView {
            job: None,
            pages: Vec::new(),
            foreign: Vec::new(),
        };
        for (index, page) in self.page_rows(tenant, job)? {
            if let Some(bound) = &bound {
                if page.upload.is_some() && page.upload != *bound {
                    view.foreign.push(index);
                }
            }
            view.pages.push(page.entry(tenant, job, index)?);
        }
        view.job = row;
        Ok(view)
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
                let page: PageRow = serde_json::from_slice(v.value())
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
