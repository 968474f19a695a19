//! Rows as Rust values and back: integers checked for range, digests for length.

use deadpool_postgres::Object;
use quire_codecs::wire::{DeviceState, PageEntry, Role};
use tokio_postgres::Row;

use super::pg;
use crate::auth::DeviceRecord;
use crate::meta::{JobRow, MetaError};

pub(super) const JOB_COLUMNS: &str =
    "committed, page_count, bytes, committed_unix, delivered_unix, \
                           deleted_unix, owner, created_unix, upload";

pub(super) fn int<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, MetaError> {
    T::try_from(v).map_err(|_| MetaError::Corrupt(format!("{what} {v} is out of range")))
}

pub(super) fn big(v: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(v).map_err(|_| MetaError::Corrupt(format!("{what} {v} does not fit")))
}

pub(super) fn digest(raw: &[u8], what: impl FnOnce() -> String) -> Result<[u8; 32], MetaError> {
    raw.try_into().map_err(|_| MetaError::Corrupt(what()))
}

pub(super) fn job_row(r: &Row) -> Result<JobRow, MetaError> {
    job_row_at(r, 0)
}

/// The [`JOB_COLUMNS`] starting at column `at`.
pub(super) fn job_row_at(r: &Row, at: usize) -> Result<JobRow, MetaError> {
    Ok(JobRow {
        committed: r.get(at),
        page_count: int(r.get(at + 1), "page count")?,
        bytes: int(r.get(at + 2), "byte count")?,
        committed_unix: r.get(at + 3),
        delivered_unix: r.get(at + 4),
        deleted_unix: r.get(at + 5),
        owner: r.get(at + 6),
        created_unix: r.get(at + 7),
        upload: r.get(at + 8),
    })
}

pub(super) fn device(device_id: &str, r: &Row) -> Result<DeviceRecord, MetaError> {
    let corrupt = || MetaError::Corrupt(format!("device {device_id}"));
    let state: String = r.get(2);
    Ok(DeviceRecord {
        device_id: device_id.to_string(),
        tenant: r.get(0),
        role: Role::parse(r.get(1)).ok_or_else(corrupt)?,
        state: DeviceState::parse(&state).ok_or_else(corrupt)?,
        secret_hash: digest(r.get(3), || format!("device {device_id}"))?,
    })
}

/// A page row `(idx, name, size, sha256, upload)` as an entry and the upload that stored it.
pub(super) fn page(r: &Row) -> Result<(PageEntry, Option<String>), MetaError> {
    let index: u32 = int(r.get(0), "page index")?;
    Ok((
        PageEntry {
            index,
            name: r.get(1),
            size: int(r.get(2), "page size")?,
            sha256: digest(r.get(3), || format!("digest of page {index}"))?,
        },
        r.get(4),
    ))
}

pub(super) async fn job_pages(
    c: &Object,
    tenant: &str,
    job: &str,
) -> Result<Vec<(PageEntry, Option<String>)>, MetaError> {
    c.query(
        "SELECT idx, name, size, sha256, upload FROM pages \
         WHERE tenant = $1 AND job = $2 ORDER BY idx",
        &[&tenant, &job],
    )
    .await
    .map_err(pg)?
    .iter()
    .map(page)
    .collect()
}

pub(super) async fn get_job(
    c: &Object,
    tenant: &str,
    job: &str,
) -> Result<Option<JobRow>, MetaError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = $1 AND job = $2");
    c.query_opt(&sql, &[&tenant, &job])
        .await
        .map_err(pg)?
        .as_ref()
        .map(job_row)
        .transpose()
}
