//! The server's metadata: devices and the progress of jobs, in an embedded crash-safe store
//! (redb, every commit fsync'd). Page bodies never come here; only which pages of which job
//! are stored, so a resumed push knows what to skip.
//!
//! Keys are `tenant/job/...` strings, so one tenant's rows form a contiguous range.

use std::path::Path;
use std::sync::Arc;

use crate::auth::DeviceRecord;
use quire_codecs::wire::{DeviceInfo, DeviceState, PageEntry, Role, UploadId};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const PAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("pages");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollment_tokens");
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("support_grants");
/// Legal holds, by `tenant` (the whole tenant) or `tenant/job`.
const HOLDS: TableDefinition<&str, &[u8]> = TableDefinition::new("legal_holds");
/// Tenant → how many KEK versions the vault was seen to hold (u32, big-endian). Created
/// empty in stores written before it existed; filled in on the next start.
const KEK_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("kek_versions");
/// Every table, as a new store creates them and a backup copies them.
const ALL_TABLES: [TableDefinition<&str, &[u8]>; 8] = [
    DEVICES,
    TENANTS,
    JOBS,
    PAGES,
    TOKENS,
    GRANTS,
    HOLDS,
    KEK_VERSIONS,
];

/// The metadata store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    Db(String),
    #[error("metadata record is corrupt: {0}")]
    Corrupt(String),
    #[error("tenant {0} does not exist")]
    NoSuchTenant(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("device {0} does not exist")]
    NoSuchDevice(String),
    #[error("the enrollment token is unknown, already used, or expired")]
    BadToken,
    #[error("{0} not found")]
    NotFound(String),
    #[error("device {0} is revoked for good; enroll the scanner again under a new device id")]
    Revoked(String),
    #[error("job {job} belongs to another upload (device {owner}); push under another job id")]
    Owned { job: String, owner: String },
    #[error(
        "job {job} is being pushed by another upload of this device (another `quire push` \
         process or machine using the same credential): let that one finish, push under \
         another job id, or have an administrator clear it with `quire admin job abort`"
    )]
    OtherUpload { job: String },
    #[error("job {0} is committed; only unfinished uploads can be aborted")]
    Committed(String),
    #[error(
        "job {job} is no longer open for this upload (committed, aborted, or its device \
         disabled meanwhile): open the job again"
    )]
    NotHeld { job: String },
}

/// What the store being unreachable or failing tells a client: not the client's fault.
pub const UNAVAILABLE: &str = "the server's metadata store is unavailable (a problem on the \
     server's side, not the scanner's; the operator finds the cause in the server log): retry later";

impl MetaError {
    /// The error code and message a client gets for this error. A failing or unreachable
    /// store is the server's side and retryable; damaged records are a bug or damage for the
    /// operator (`Internal`); the rest say what the client asked for that cannot be.
    pub fn refusal(&self) -> (quire_codecs::wire::ErrorCode, String) {
        use quire_codecs::wire::ErrorCode;
        match self {
            MetaError::Db(_) => (ErrorCode::StoreUnavailable, UNAVAILABLE.into()),
            MetaError::Corrupt(_) => (
                ErrorCode::Internal,
                "internal error; see the server log".into(),
            ),
            MetaError::NoSuchTenant(_) | MetaError::NoSuchDevice(_) | MetaError::NotFound(_) => {
                (ErrorCode::NotFound, self.to_string())
            }
            MetaError::BadToken => (ErrorCode::BadCredential, self.to_string()),
            MetaError::Exists(_)
            | MetaError::Revoked(_)
            | MetaError::Owned { .. }
            | MetaError::OtherUpload { .. }
            | MetaError::NotHeld { .. }
            | MetaError::Committed(_) => (ErrorCode::Conflict, self.to_string()),
        }
    }
}

/// A support partner's time-boxed access to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub expires_unix: u64,
    pub reason: String,
    pub granted_by: String,
}

/// Counts for `quire admin status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantStats {
    pub devices: u32,
    pub jobs: u32,
    pub committed_jobs: u32,
    pub committed_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct TokenRow {
    tenant: String,
    expires_unix: u64,
    used: bool,
}

fn db<E: std::fmt::Display>(e: E) -> MetaError {
    MetaError::Db(e.to_string())
}

/// A job's state as the server records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    pub committed: bool,
    pub page_count: u32,
    pub bytes: u64,
    /// When the job was committed (Unix seconds).
    #[serde(default)]
    pub committed_unix: i64,
    /// When a delivery consumer acknowledged it.
    #[serde(default)]
    pub delivered_unix: Option<i64>,
    /// When its objects were deleted (by retention or delete-on-delivery).
    #[serde(default)]
    pub deleted_unix: Option<i64>,
    /// The device whose upload this is (see `jobs.rs`); `None` in rows of older versions.
    #[serde(default)]
    pub owner: Option<String>,
    /// When its first page was stored or it was opened for pushing (0 in older rows).
    #[serde(default)]
    pub created_unix: i64,
    /// The upload (hex [`quire_codecs::wire::UploadId`]) the job is bound to; `None` in rows
    /// of older versions and for pushes of older clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
}

/// A legal hold: nothing under it is deleted until it is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    pub by: String,
    pub since_unix: i64,
}

#[derive(Serialize, Deserialize)]
struct PageRow {
    name: String,
    size: u64,
    sha256: String,
    object_key: String,
    stored_bytes: u64,
    /// The upload that stored it (hex); `None` in rows of older versions and older clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload: Option<String>,
}

/// Handle on the metadata store. Cheap to clone.
#[derive(Clone)]
pub struct Meta {
    db: Arc<Database>,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Meta")
    }
}

fn job_key(tenant: &str, job: &str) -> String {
    format!("{tenant}/{job}")
}

fn page_row_key(tenant: &str, job: &str, index: u32) -> String {
    format!("{tenant}/{job}/{index:06}")
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Meta {
    /// Reads, changes and writes back one job row in a single transaction.
    fn update_job(
        &self,
        tenant: &str,
        job: &str,
        change: impl FnOnce(&mut JobRow) -> Result<(), MetaError>,
    ) -> Result<JobRow, MetaError> {
        let key = job_key(tenant, job);
        let txn = self.db.begin_write().map_err(db)?;
        let row = {
            let mut t = txn.open_table(JOBS).map_err(db)?;
            let mut row: JobRow = match t.get(key.as_str()).map_err(db)? {
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?,
                None => return Err(MetaError::NotFound(format!("job {job}"))),
            };
            change(&mut row)?;
            let v = serde_json::to_vec(&row).expect("row serialises");
            t.insert(key.as_str(), v.as_slice()).map_err(db)?;
            row
        };
        txn.commit().map_err(db)?;
        Ok(row)
    }

    /// Reads, changes and writes back one device in a single transaction, so that two
    /// administrators acting at once cannot undo each other (a revoke stays a revoke).
    fn update_device(
        &self,
        device_id: &str,
        change: impl FnOnce(&mut DeviceRecord) -> Result<(), MetaError>,
    ) -> Result<DeviceRecord, MetaError> {
        let txn = self.db.begin_write().map_err(db)?;
        let rec = {
            let mut t = txn.open_table(DEVICES).map_err(db)?;
            let raw = match t.get(device_id).map_err(db)? {
                Some(v) => v.value().to_vec(),
                None => return Err(MetaError::NoSuchDevice(device_id.into())),
            };
            let mut rec = decode_device(device_id, &raw)?;
            change(&mut rec)?;
            t.insert(device_id, DeviceRow::encode(&rec).as_slice())
                .map_err(db)?;
            rec
        };
        txn.commit().map_err(db)?;
        Ok(rec)
    }

    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(db)?;
        }
        let database = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => MetaError::Db(format!(
                "{} is in use by another process (a running `quire serve`?): stop it first",
                path.display()
            )),
            other => db(other),
        })?;
        let txn = database.begin_write().map_err(db)?;
        for t in ALL_TABLES {
            txn.open_table(t).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        let meta = Meta {
            db: Arc::new(database),
        };
        meta.purge_deleted_pages()?;
        Ok(meta)
    }

    fn put(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &[u8],
    ) -> Result<(), MetaError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut t = txn.open_table(table).map_err(db)?;
            t.insert(key, value).map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    fn get(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, MetaError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(table).map_err(db)?;
        Ok(t.get(key).map_err(db)?.map(|v| v.value().to_vec()))
    }
}

impl MetaStore for Meta {
    fn tenant_exists(&self, tenant: &str) -> Result<bool, MetaError> {
        Ok(self.get(TENANTS, tenant)?.is_some())
    }

    /// Creates a tenant; fails if it exists.
    fn create_tenant(&self, tenant: &str) -> Result<(), MetaError> {
        if self.tenant_exists(tenant)? {
            return Err(MetaError::Exists(format!("tenant {tenant}")));
        }
        self.put(TENANTS, tenant, b"{}")
    }

    /// Creates a tenant if it does not exist yet.
    fn ensure_tenant(&self, tenant: &str) -> Result<(), MetaError> {
        if !self.tenant_exists(tenant)? {
            self.put(TENANTS, tenant, b"{}")?;
        }
        Ok(())
    }

    /// Records a one-time enrollment token, by the SHA-256 of its secret (never the secret).
    fn create_token(
        &self,
        token_hash: &[u8; 32],
        tenant: &str,
        expires_unix: u64,
    ) -> Result<(), MetaError> {
        if !self.tenant_exists(tenant)? {
            return Err(MetaError::NoSuchTenant(tenant.into()));
        }
        let row = TokenRow {
            tenant: tenant.into(),
            expires_unix,
            used: false,
        };
        self.put(
            TOKENS,
            &hex::encode(token_hash),
            &serde_json::to_vec(&row).expect("row serialises"),
        )
    }

    /// Uses up a token and registers `device` (pending) for its tenant, in one transaction:
    /// a token enrolls at most one device, however many clients race with it.
    fn enroll(
        &self,
        token_hash: &[u8; 32],
        now_unix: u64,
        device_id: &str,
        secret_hash: [u8; 32],
    ) -> Result<DeviceRecord, MetaError> {
        let txn = self.db.begin_write().map_err(db)?;
        let rec = {
            let mut tokens = txn.open_table(TOKENS).map_err(db)?;
            let key = hex::encode(token_hash);
            let mut row: TokenRow = match tokens.get(key.as_str()).map_err(db)? {
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?,
                None => return Err(MetaError::BadToken),
            };
            if row.used || now_unix >= row.expires_unix {
                return Err(MetaError::BadToken);
            }
            let mut devices = txn.open_table(DEVICES).map_err(db)?;
            if devices.get(device_id).map_err(db)?.is_some() {
                return Err(MetaError::Exists(format!("device {device_id}")));
            }
            row.used = true;
            let used = serde_json::to_vec(&row).expect("row serialises");
            tokens.insert(key.as_str(), used.as_slice()).map_err(db)?;
            let rec = DeviceRecord {
                device_id: device_id.into(),
                tenant: row.tenant.clone(),
                role: Role::Device,
                state: DeviceState::Pending,
                secret_hash,
            };
            let dev = DeviceRow::encode(&rec);
            devices.insert(device_id, dev.as_slice()).map_err(db)?;
            rec
        };
        txn.commit().map_err(db)?;
        Ok(rec)
    }

    /// Records (or replaces) a support partner's access to a tenant.
    fn put_grant(&self, tenant: &str, partner: &str, grant: &Grant) -> Result<(), MetaError> {
        self.put(
            GRANTS,
            &format!("{tenant}/{partner}"),
            &serde_json::to_vec(grant).expect("row serialises"),
        )
    }

    /// Withdraws a grant; says whether there was one.
    fn remove_grant(&self, tenant: &str, partner: &str) -> Result<bool, MetaError> {
        let txn = self.db.begin_write().map_err(db)?;
        let existed = {
            let mut t = txn.open_table(GRANTS).map_err(db)?;
            let key = format!("{tenant}/{partner}");
            let removed = t.remove(key.as_str()).map_err(db)?.is_some();
            removed
        };
        txn.commit().map_err(db)?;
        Ok(existed)
    }

    /// The partner's grant on the tenant, if any (expired or not).
    fn grant(&self, tenant: &str, partner: &str) -> Result<Option<Grant>, MetaError> {
        self.get(GRANTS, &format!("{tenant}/{partner}"))?
            .map(|raw| serde_json::from_slice(&raw).map_err(|e| MetaError::Corrupt(e.to_string())))
            .transpose()
    }

    /// Counts of a tenant's devices and jobs.
    fn stats(&self, tenant: &str) -> Result<TenantStats, MetaError> {
        let mut st = TenantStats {
            devices: self.devices(tenant)?.len() as u32,
            ..TenantStats::default()
        };
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(JOBS).map_err(db)?;
        let (start, end) = (format!("{tenant}/"), format!("{tenant}0"));
        for item in t.range(start.as_str()..end.as_str()).map_err(db)? {
            let (_, v) = item.map_err(db)?;
            let row: JobRow =
                serde_json::from_slice(v.value()).map_err(|e| MetaError::Corrupt(e.to_string()))?;
            st.jobs += 1;
            if row.committed {
                st.committed_jobs += 1;
                st.committed_bytes += row.bytes;
            }
        }
        Ok(st)
    }

    /// The stored record of a device.
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, MetaError> {
        let Some(raw) = self.get(DEVICES, device_id)? else {
            return Ok(None);
        };
        decode_device(device_id, &raw).map(Some)
    }

    /// Registers a device (or replaces its record, e.g. to rotate the secret).
    fn put_device(&self, rec: &DeviceRecord) -> Result<(), MetaError> {
        if !self.tenant_exists(&rec.tenant)? {
            return Err(MetaError::NoSuchTenant(rec.tenant.clone()));
        }
        self.put(DEVICES, &rec.device_id, &DeviceRow::encode(rec))
    }

    /// Changes a device's state.
    fn set_device_state(
        &self,
        device_id: &str,
        state: DeviceState,
    ) -> Result<DeviceRecord, MetaError> {
        self.update_device(device_id, devices::set_state(device_id, state))
    }

    fn claim_job(
        &self,
        tenant: &str,
        job: &str,
        device: &str,
        upload: Option<UploadId>,
    ) -> Result<JobRow, MetaError> {
        self.claim(tenant, job, device, upload)
    }

    fn commit_view(&self, tenant: &str, job: &str) -> Result<CommitView, MetaError> {
        Meta::commit_view(self, tenant, job)
    }

    fn forget_uncommitted(&self, tenant: &str, job: &str) -> Result<Vec<String>, MetaError> {
        Meta::forget_uncommitted(self, tenant, job)
    }

    fn kek_versions(&self, tenant: &str) -> Result<u32, MetaError> {
        match self.get(KEK_VERSIONS, tenant)? {
            None => Ok(0),
            Some(v) => Ok(u32::from_be_bytes(v.as_slice().try_into().map_err(
                |_| MetaError::Corrupt(format!("key versions of tenant {tenant}")),
            )?)),
        }
    }

    fn record_kek_versions(&self, tenant: &str, versions: u32) -> Result<(), MetaError> {
        if versions > self.kek_versions(tenant)? {
            self.put(KEK_VERSIONS, tenant, &versions.to_be_bytes())?;
        }
        Ok(())
    }

    fn rotate_secret(
        &self,
        device_id: &str,
        secret_hash: [u8; 32],
    ) -> Result<DeviceRecord, MetaError> {
        self.update_device(device_id, devices::rotate(device_id, secret_hash))
    }

    /// Every device of a tenant.
    fn all_devices(&self) -> Result<Vec<DeviceInfo>, MetaError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(DEVICES).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, _) = item.map_err(db)?;
            if let Some(rec) = self.device(k.value())? {
                out.push(DeviceInfo {
                    device_id: rec.device_id,
                    tenant: rec.tenant,
                    role: rec.role,
                    state: rec.state,
                });
            }
        }
        Ok(out)
    }

    /// A job's record, `None` if nothing was ever pushed to it.
    fn job(&self, tenant: &str, job: &str) -> Result<Option<JobRow>, MetaError> {
        self.get(JOBS, &job_key(tenant, job))?
            .map(|raw| serde_json::from_slice(&raw).map_err(|e| MetaError::Corrupt(e.to_string())))
            .transpose()
    }

    /// Records a job as committed with its totals.
    fn commit_job(
        &self,
        tenant: &str,
        job: &str,
        page_count: u32,
        bytes: u64,
    ) -> Result<(), MetaError> {
        let earlier = self.job(tenant, job)?.unwrap_or_default();
        let row = JobRow {
            committed: true,
            page_count,
            bytes,
            committed_unix: now_unix(),
            owner: earlier.owner,
            created_unix: earlier.created_unix,
            upload: earlier.upload,
            ..JobRow::default()
        };
        self.put(
            JOBS,
            &job_key(tenant, job),
            &serde_json::to_vec(&row).expect("row serialises"),
        )
    }

    fn record_pages(&self, pages: &[StoredPage]) -> Result<Vec<usize>, MetaError> {
        Meta::record_pages(self, pages)
    }

    fn tenants(&self) -> Result<Vec<String>, MetaError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(TENANTS).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, _) = item.map_err(db)?;
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    fn jobs(&self, tenant: &str) -> Result<Vec<(String, JobRow)>, MetaError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(JOBS).map_err(db)?;
        let (start, end) = (format!("{tenant}/"), format!("{tenant}0"));
        let mut out = Vec::new();
        for item in t.range(start.as_str()..end.as_str()).map_err(db)? {
            let (k, v) = item.map_err(db)?;
            let row: JobRow =
                serde_json::from_slice(v.value()).map_err(|e| MetaError::Corrupt(e.to_string()))?;
            let id = k.value()[start.len()..].to_string();
            out.push((id, row));
        }
        Ok(out)
    }

    fn mark_delivered(&self, tenant: &str, job: &str, at: i64) -> Result<JobRow, MetaError> {
        self.update_job(tenant, job, |row| {
            if !row.committed {
                return Err(MetaError::NotFound(format!("committed job {job}")));
            }
            row.delivered_unix.get_or_insert(at);
            Ok(())
        })
    }

    fn mark_deleted(&self, tenant: &str, job: &str, at: i64) -> Result<(), MetaError> {
        self.delete_job_rows(tenant, job, at)
    }

    fn forget_pages(&self, tenant: &str) -> Result<usize, MetaError> {
        self.forget_tenant_pages(tenant)
    }

    fn set_hold(
        &self,
        tenant: &str,
        job: Option<&str>,
        hold: Option<&Hold>,
    ) -> Result<bool, MetaError> {
        let key = match job {
            Some(j) => job_key(tenant, j),
            None => tenant.to_string(),
        };
        let txn = self.db.begin_write().map_err(db)?;
        let had = {
            let mut t = txn.open_table(HOLDS).map_err(db)?;
            match hold {
                Some(h) => {
                    let v = serde_json::to_vec(h).expect("hold serialises");
                    t.insert(key.as_str(), v.as_slice()).map_err(db)?.is_some()
                }
                None => t.remove(key.as_str()).map_err(db)?.is_some(),
            }
        };
        txn.commit().map_err(db)?;
        Ok(had)
    }

    fn snapshot(&self, to: &Path) -> Result<u64, MetaError> {
        Meta::snapshot(self, to)
    }

    fn hold_on(&self, tenant: &str, job: &str) -> Result<Option<Hold>, MetaError> {
        for key in [job_key(tenant, job), tenant.to_string()] {
            if let Some(raw) = self.get(HOLDS, &key)? {
                return serde_json::from_slice(&raw)
                    .map(Some)
                    .map_err(|e| MetaError::Corrupt(e.to_string()));
            }
        }
        Ok(None)
    }

    fn page_recorded(&self, tenant: &str, job: &str, index: u32) -> Result<bool, MetaError> {
        Ok(self
            .get(PAGES, &page_row_key(tenant, job, index))?
            .is_some())
    }

    /// The pages of a job recorded as stored, by index.
    fn pages(&self, tenant: &str, job: &str) -> Result<Vec<PageEntry>, MetaError> {
        self.page_rows(tenant, job)?
            .into_iter()
            .map(|(index, row)| row.entry(tenant, job, index))
            .collect()
    }
}

mod devices;
mod events;
pub use events::{DeviceChange, DeviceEvent};
mod forget;
mod jobs;
mod snapshot;
pub use jobs::{held_by, CommitView, PageContext, StoredPage};
pub mod postgres;
pub use postgres::{PgMeta, PgTarget};
mod recorder;
pub use recorder::PageRecorder;
mod store;

use devices::{decode_device, DeviceRow};
pub use store::MetaStore;

#[cfg(test)]
mod tests;
