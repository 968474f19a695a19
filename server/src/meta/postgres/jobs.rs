//! Who owns a job, what committing it reads, and taking back one never committed: the
//! operations where two nodes may race for the same job (see `crate::meta::jobs`).

use quire_codecs::wire::UploadId;

use super::convert::{device, get_job, job_row, job_row_at, page, JOB_COLUMNS};
use super::{pg, PgMeta};
use crate::meta::jobs::needs_claim;
use crate::meta::{now_unix, CommitView, JobRow, MetaError, PageContext};

/// The device, the job and the page a scanner's page names, in one statement.
const PAGE_CONTEXT: &str = "\
SELECT d.tenant, d.role, d.state, d.secret_hash,
       j.committed, j.page_count, j.bytes, j.committed_unix, j.delivered_unix, j.deleted_unix,
       j.owner, j.created_unix, j.upload,
       EXISTS (SELECT 1 FROM pages p WHERE p.tenant = $1 AND p.job = $2 AND p.idx = $4),
       d.device_id IS NOT NULL, j.job IS NOT NULL
FROM (SELECT 1) AS one
LEFT JOIN devices d ON d.device_id = $3
LEFT JOIN jobs j ON j.tenant = $1 AND j.job = $2";

impl PgMeta {
    pub(super) fn context(
        &self,
        tenant: &str,
        job: &str,
        device_id: &str,
        index: u32,
    ) -> Result<PageContext, MetaError> {
        let (tenant, job, id) = (tenant.to_string(), job.to_string(), device_id.to_string());
        self.with(move |c| async move {
            let statement = c.prepare_cached(PAGE_CONTEXT).await.map_err(pg)?;
            let r = c
                .query_one(&statement, &[&tenant, &job, &id, &i64::from(index)])
                .await
                .map_err(pg)?;
            Ok(PageContext {
                device: match r.get::<_, bool>(14) {
                    true => Some(device(&id, &r)?),
                    false => None,
                },
                job: match r.get::<_, bool>(15) {
                    true => Some(job_row_at(&r, 4)?),
                    false => None,
                },
                recorded: r.get(13),
            })
        })
    }

    pub(super) fn claim(
        &self,
        tenant: &str,
        job: &str,
        device: &str,
        upload: Option<UploadId>,
    ) -> Result<JobRow, MetaError> {
        let (tenant, job, device) = (tenant.to_string(), job.to_string(), device.to_string());
        let upload = upload.map(|u| u.to_hex());
        self.with(move |mut c| async move {
            // Every page of a job asks; only the first needs to write.
            if let Some(row) = get_job(&c, &tenant, &job).await? {
                if !needs_claim(&row, &job, &device, upload.as_deref())? {
                    return Ok(row);
                }
            }
            let txn = c.transaction().await.map_err(pg)?;
            txn.execute(
                "INSERT INTO jobs (tenant, job, created_unix) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&tenant, &job, &now_unix()],
            )
            .await
            .map_err(pg)?;
            let sql =
                format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = $1 AND job = $2 FOR UPDATE");
            let mut row = job_row(&txn.query_one(&sql, &[&tenant, &job]).await.map_err(pg)?)?;
            // Read again under the lock: another upload, maybe on another node, may have
            // claimed it since.
            if !needs_claim(&row, &job, &device, upload.as_deref())? {
                txn.commit().await.map_err(pg)?;
                return Ok(row);
            }
            row.owner = Some(device);
            row.upload = upload;
            txn.execute(
                "UPDATE jobs SET owner = $3, upload = $4 WHERE tenant = $1 AND job = $2",
                &[&tenant, &job, &row.owner, &row.upload],
            )
            .await
            .map_err(pg)?;
            txn.commit().await.map_err(pg)?;
            Ok(row)
        })
    }

    pub(super) fn view(&self, tenant: &str, job: &str) -> Result<CommitView, MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        self.with(move |mut c| async move {
            // One snapshot for the row and its pages, as the embedded store reads them.
            let txn = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg)?;
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = $1 AND job = $2");
            let row = txn
                .query_opt(&sql, &[&tenant, &job])
                .await
                .map_err(pg)?
                .as_ref()
                .map(job_row)
                .transpose()?;
            let pages = txn
                .query(
                    "SELECT idx, name, size, sha256, upload FROM pages \
                     WHERE tenant = $1 AND job = $2 ORDER BY idx",
                    &[&tenant, &job],
                )
                .await
                .map_err(pg)?;
            txn.commit().await.map_err(pg)?;
            let bound = row.as_ref().map(|r| r.upload.clone());
            let mut view = CommitView::default();
            for r in &pages {
                let (entry, upload) = page(r)?;
                if let Some(bound) = &bound {
                    if upload.is_some() && upload != *bound {
                        view.foreign.push(entry.index);
                    }
                }
                view.pages.push(entry);
            }
            view.job = row;
            Ok(view)
        })
    }

    pub(super) fn forget_job(&self, tenant: &str, job: &str) -> Result<Vec<String>, MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        self.with(move |mut c| async move {
            let txn = c.transaction().await.map_err(pg)?;
            let committed: bool = txn
                .query_opt(
                    "SELECT committed FROM jobs WHERE tenant = $1 AND job = $2 FOR UPDATE",
                    &[&tenant, &job],
                )
                .await
                .map_err(pg)?
                .ok_or_else(|| MetaError::NotFound(format!("job {job}")))?
                .get(0);
            if committed {
                return Err(MetaError::Committed(job));
            }
            let keys = txn
                .query(
                    "DELETE FROM pages WHERE tenant = $1 AND job = $2 RETURNING object_key",
                    &[&tenant, &job],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            txn.execute(
                "DELETE FROM jobs WHERE tenant = $1 AND job = $2",
                &[&tenant, &job],
            )
            .await
            .map_err(pg)?;
            txn.commit().await.map_err(pg)?;
            Ok(keys)
        })
    }
}
