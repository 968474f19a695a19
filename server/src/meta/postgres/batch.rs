//! Recording stored pages: the metadata write of the hot path, one statement per batch.
//!
//! The [`crate::meta::PageRecorder`] gathers the pages stored meanwhile into one call; here
//! that call is one statement (one round trip, one commit): the rows travel as arrays,
//! `unnest` turns them back into rows, and a data-modifying `WITH` creates the jobs' rows
//! where they are missing in the same statement, so all or none are recorded.
//!
//! A page with a holder (a scanner's) is inserted only while its device is enabled and its
//! upload holds the job uncommitted: the check is part of the write, so a node need not read
//! the job and the device before each page (see `requests/open_jobs.rs`). The statement
//! returns the rows it wrote; a page missing from them was refused.

use std::collections::HashSet;

use super::convert::big;
use super::{pg, PgMeta};
use crate::meta::{now_unix, MetaError, StoredPage};

const RECORD: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                         $6::bytea[], $7::text[], $8::bigint[], $10::text[], $11::text[])
        AS u(tenant, job, idx, name, size, sha256, object_key, stored_bytes, upload, holder)
), new_jobs AS (
    INSERT INTO jobs (tenant, job, created_unix)
    SELECT DISTINCT tenant, job, $9::bigint FROM input WHERE holder IS NULL
    ON CONFLICT DO NOTHING
)
INSERT INTO pages (tenant, job, idx, name, size, sha256, object_key, stored_bytes, upload)
SELECT i.tenant, i.job, i.idx, i.name, i.size, i.sha256, i.object_key, i.stored_bytes, i.upload
FROM input i
WHERE i.holder IS NULL OR EXISTS (
    SELECT 1 FROM jobs j JOIN devices d ON d.device_id = i.holder
    WHERE j.tenant = i.tenant AND j.job = i.job AND NOT j.committed
      AND j.owner = i.holder AND j.upload IS NOT DISTINCT FROM i.upload
      AND d.state = 'enabled')
ON CONFLICT (tenant, job, idx) DO UPDATE SET
    name = EXCLUDED.name, size = EXCLUDED.size, sha256 = EXCLUDED.sha256,
    object_key = EXCLUDED.object_key, stored_bytes = EXCLUDED.stored_bytes,
    upload = EXCLUDED.upload
RETURNING tenant, job, idx";

/// Columns of a batch, as the statement takes them.
#[derive(Default)]
struct Columns {
    tenant: Vec<String>,
    job: Vec<String>,
    index: Vec<i64>,
    name: Vec<String>,
    size: Vec<i64>,
    sha256: Vec<Vec<u8>>,
    object_key: Vec<String>,
    stored_bytes: Vec<i64>,
    upload: Vec<Option<String>>,
    holder: Vec<Option<String>>,
}

impl Columns {
    fn of(pages: &[StoredPage]) -> Result<Columns, MetaError> {
        let mut c = Columns::default();
        // The same page twice in one batch would make the statement touch a row twice,
        // which PostgreSQL refuses; the last one wins, as it would in separate calls.
        let mut seen = std::collections::HashMap::new();
        for p in pages {
            let key = (p.tenant.as_str(), p.job.as_str(), p.entry.index);
            if let Some(&at) = seen.get(&key) {
                c.set(at, p)?;
                continue;
            }
            seen.insert(key, c.tenant.len());
            c.tenant.push(p.tenant.clone());
            c.job.push(p.job.clone());
            c.index.push(i64::from(p.entry.index));
            c.name.push(String::new());
            c.size.push(0);
            c.sha256.push(Vec::new());
            c.object_key.push(String::new());
            c.stored_bytes.push(0);
            c.upload.push(None);
            c.holder.push(None);
            c.set(c.tenant.len() - 1, p)?;
        }
        Ok(c)
    }

    fn set(&mut self, at: usize, p: &StoredPage) -> Result<(), MetaError> {
        self.name[at] = p.entry.name.clone();
        self.size[at] = big(p.entry.size, "page size")?;
        self.sha256[at] = p.entry.sha256.to_vec();
        self.object_key[at] = p.object_key.clone();
        self.stored_bytes[at] = big(p.stored_bytes, "stored size")?;
        self.upload[at] = p.upload.map(|u| u.to_hex());
        self.holder[at] = p.holder.clone();
        Ok(())
    }
}

pub(super) fn record_pages(meta: &PgMeta, pages: &[StoredPage]) -> Result<Vec<usize>, MetaError> {
    if pages.is_empty() {
        return Ok(Vec::new());
    }
    let c = Columns::of(pages)?;
    let written = meta.with(move |client| async move {
        let statement = client.prepare_cached(RECORD).await.map_err(pg)?;
        let rows = client
            .query(
                &statement,
                &[
                    &c.tenant,
                    &c.job,
                    &c.index,
                    &c.name,
                    &c.size,
                    &c.sha256,
                    &c.object_key,
                    &c.stored_bytes,
                    &now_unix(),
                    &c.upload,
                    &c.holder,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                )
            })
            .collect::<HashSet<_>>())
    })?;
    Ok(pages
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            let key = (p.tenant.clone(), p.job.clone(), i64::from(p.entry.index));
            !written.contains(&key)
        })
        .map(|(at, _)| at)
        .collect())
}
