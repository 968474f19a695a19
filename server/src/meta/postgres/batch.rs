//! Recording stored pages: the metadata write of the hot path, one statement per batch.
//!
//! The [`crate::meta::PageRecorder`] gathers the pages stored meanwhile into one call; here
//! that call is one statement (one round trip, one commit): the rows travel as arrays,
//! `unnest` turns them back into rows, and a data-modifying `WITH` creates the jobs' rows
//! where they are missing in the same statement, so all or none are recorded.

use super::convert::big;
use super::{pg, PgMeta};
use crate::meta::{now_unix, MetaError, StoredPage};

const RECORD: &str = "\
WITH new_jobs AS (
    INSERT INTO jobs (tenant, job, created_unix)
    SELECT DISTINCT t, j, $9::bigint FROM unnest($1::text[], $2::text[]) AS u(t, j)
    ON CONFLICT DO NOTHING
)
INSERT INTO pages (tenant, job, idx, name, size, sha256, object_key, stored_bytes, upload)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                     $6::bytea[], $7::text[], $8::bigint[], $10::text[])
ON CONFLICT (tenant, job, idx) DO UPDATE SET
    name = EXCLUDED.name, size = EXCLUDED.size, sha256 = EXCLUDED.sha256,
    object_key = EXCLUDED.object_key, stored_bytes = EXCLUDED.stored_bytes,
    upload = EXCLUDED.upload";

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
        Ok(())
    }
}

pub(super) fn record_pages(meta: &PgMeta, pages: &[StoredPage]) -> Result<(), MetaError> {
    if pages.is_empty() {
        return Ok(());
    }
    let c = Columns::of(pages)?;
    meta.with(move |client| async move {
        let statement = client.prepare_cached(RECORD).await.map_err(pg)?;
        client
            .execute(
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
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    })
}
