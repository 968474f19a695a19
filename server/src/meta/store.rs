//! The metadata store's interface: what the server asks of whichever database keeps it.

use super::*;

/// The metadata the server keeps: tenants, devices, enrollment tokens, grants, and the
/// progress of jobs. The embedded default is [`Meta`] (redb); a shared database serving
/// several ingest nodes implements the same trait.
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    /// Whether the tenant exists.
    fn tenant_exists(&self, tenant: &str) -> Result<bool, MetaError>;

    /// Creates a tenant; fails if it exists.
    fn create_tenant(&self, tenant: &str) -> Result<(), MetaError>;

    /// Creates a tenant if it does not exist yet.
    fn ensure_tenant(&self, tenant: &str) -> Result<(), MetaError>;

    /// Records a one-time enrollment token, by the SHA-256 of its secret (never the secret).
    fn create_token(
        &self,
        token_hash: &[u8; 32],
        tenant: &str,
        expires_unix: u64,
    ) -> Result<(), MetaError>;

    /// Uses up a token and registers `device` (pending) for its tenant, in one transaction:
    /// a token enrolls at most one device, however many clients race with it.
    fn enroll(
        &self,
        token_hash: &[u8; 32],
        now_unix: u64,
        device_id: &str,
        secret_hash: [u8; 32],
    ) -> Result<DeviceRecord, MetaError>;

    /// Records (or replaces) a support partner's access to a tenant.
    fn put_grant(&self, tenant: &str, partner: &str, grant: &Grant) -> Result<(), MetaError>;

    /// Withdraws a grant; says whether there was one.
    fn remove_grant(&self, tenant: &str, partner: &str) -> Result<bool, MetaError>;

    /// The partner's grant on the tenant, if any (expired or not).
    fn grant(&self, tenant: &str, partner: &str) -> Result<Option<Grant>, MetaError>;

    /// Counts of a tenant's devices and jobs.
    fn stats(&self, tenant: &str) -> Result<TenantStats, MetaError>;

    /// The stored record of a device.
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, MetaError>;

    /// Registers a device (or replaces its record, e.g. to rotate the secret).
    fn put_device(&self, rec: &DeviceRecord) -> Result<(), MetaError>;

    /// Changes a device's state.
    fn set_device_state(
        &self,
        device_id: &str,
        state: DeviceState,
    ) -> Result<DeviceRecord, MetaError>;

    /// Gives a device a new secret; a revoked device's credential stays void.
    fn rotate_secret(
        &self,
        device_id: &str,
        secret_hash: [u8; 32],
    ) -> Result<DeviceRecord, MetaError>;

    /// How many KEK versions of the tenant are known to exist (0 if none recorded).
    fn kek_versions(&self, tenant: &str) -> Result<u32, MetaError>;

    /// Records that `versions` KEK versions of the tenant exist; never lowers the record.
    fn record_kek_versions(&self, tenant: &str, versions: u32) -> Result<(), MetaError>;

    /// Claims a job for a device's upload; refuses one that another device, or another
    /// upload of the same device, owns.
    fn claim_job(
        &self,
        tenant: &str,
        job: &str,
        device: &str,
        upload: Option<UploadId>,
    ) -> Result<JobRow, MetaError>;

    /// What committing a job checks, read once: its row, its pages, and the pages an upload
    /// other than the one the job is bound to stored.
    fn commit_view(&self, tenant: &str, job: &str) -> Result<CommitView, MetaError>;

    /// Forgets an uncommitted job and returns its pages' object keys (to delete).
    fn forget_uncommitted(&self, tenant: &str, job: &str) -> Result<Vec<String>, MetaError>;

    /// Every device of a tenant.
    fn devices(&self, tenant: &str) -> Result<Vec<DeviceInfo>, MetaError> {
        let mut all = self.all_devices()?;
        all.retain(|d| d.tenant == tenant);
        Ok(all)
    }

    /// Every device of every tenant.
    fn all_devices(&self) -> Result<Vec<DeviceInfo>, MetaError>;

    /// A job's record, `None` if nothing was ever pushed to it.
    fn job(&self, tenant: &str, job: &str) -> Result<Option<JobRow>, MetaError>;

    /// Records a job as committed with its totals.
    fn commit_job(
        &self,
        tenant: &str,
        job: &str,
        page_count: u32,
        bytes: u64,
    ) -> Result<(), MetaError>;

    /// Records stored pages, all in one transaction: one commit and one sync however many
    /// pages (see [`super::PageRecorder`]). A page with a holder is recorded only while its
    /// device is enabled and its upload holds the job uncommitted, checked in the write
    /// (see [`StoredPage::holder`]); the positions of those refused are returned. A page
    /// without one creates its job's record if needed. On error none is recorded.
    fn record_pages(&self, pages: &[StoredPage]) -> Result<Vec<usize>, MetaError>;

    /// Records one stored page (creating the job record if needed), in one transaction.
    fn record_page(
        &self,
        tenant: &str,
        job: &str,
        entry: &PageEntry,
        object_key: &str,
        stored_bytes: u64,
        upload: Option<UploadId>,
    ) -> Result<(), MetaError> {
        self.record_pages(&[StoredPage {
            tenant: tenant.to_string(),
            job: job.to_string(),
            entry: entry.clone(),
            object_key: object_key.to_string(),
            stored_bytes,
            upload,
            holder: None,
        }])
        .map(drop)
    }

    /// The pages of a job recorded as stored, by index.
    fn pages(&self, tenant: &str, job: &str) -> Result<Vec<PageEntry>, MetaError>;

    /// Whether page `index` of the job is recorded as stored (one lookup, for the hot path).
    fn page_recorded(&self, tenant: &str, job: &str, index: u32) -> Result<bool, MetaError>;

    /// What a scanner's page needs read before it is stored: the device's record, the job's
    /// row, and whether the page is on record. A shared database answers in one round trip;
    /// a connection that opened the job reads it only for the first page (see
    /// `requests/open_jobs.rs`).
    fn page_context(
        &self,
        tenant: &str,
        job: &str,
        device_id: &str,
        index: u32,
    ) -> Result<PageContext, MetaError> {
        Ok(PageContext {
            device: self.device(device_id)?,
            job: self.job(tenant, job)?,
            recorded: self.page_recorded(tenant, job, index)?,
        })
    }

    /// Every tenant.
    fn tenants(&self) -> Result<Vec<String>, MetaError>;

    /// Every job of a tenant, by id.
    fn jobs(&self, tenant: &str) -> Result<Vec<(String, JobRow)>, MetaError>;

    /// Records that a delivery consumer acknowledged a committed job (the first time wins).
    fn mark_delivered(&self, tenant: &str, job: &str, at: i64) -> Result<JobRow, MetaError>;

    /// Records that a job's objects were deleted, and forgets its pages' names, sizes and
    /// digests.
    fn mark_deleted(&self, tenant: &str, job: &str, at: i64) -> Result<(), MetaError>;

    /// Forgets every page row of a shredded tenant; returns how many there were.
    fn forget_pages(&self, tenant: &str) -> Result<usize, MetaError>;

    /// Places (`Some`) or releases (`None`) a legal hold on a tenant or one of its jobs.
    /// Says whether there was a hold before.
    fn set_hold(
        &self,
        tenant: &str,
        job: Option<&str>,
        hold: Option<&Hold>,
    ) -> Result<bool, MetaError>;

    /// Whether this node is the one to do the periodic `work` (the retention sweeper) now.
    /// With a store of its own, always; with a shared database one node at a time holds each
    /// work, until it dies and another takes it over.
    fn lead(&self, _work: &str) -> Result<bool, MetaError> {
        Ok(true)
    }

    /// Where the vault backend `backend` keeps its wrapped tenant keys when they must be
    /// shared with other nodes (a shared database); `None`: in the data directory.
    fn key_rings(&self, _backend: &str) -> Option<Box<dyn quire_pipeline::vault::RingStore>> {
        None
    }

    /// Where the audit chains are kept when several nodes write them (a shared database, which
    /// orders each chain); `None`: in the node's own log file. A checkpoint falls due after
    /// `checkpoint_every` records of a chain.
    fn audit_trail(&self, _checkpoint_every: u64) -> Option<Box<dyn quire_audit::Trail>> {
        None
    }

    /// Tells the other nodes on the same store what this node (`node`, unique per process)
    /// claims of each rate (tokens per second, by limit key; see `limits::shares`) and
    /// returns the sum of their current claims on the same keys; `None` where there can be
    /// no other node (the embedded store belongs to one process).
    fn exchange_claims(
        &self,
        _node: &str,
        _claims: &[(String, f64)],
    ) -> Result<Option<std::collections::HashMap<String, f64>>, MetaError> {
        Ok(None)
    }

    /// Device changes as other handles on the same store (other nodes) make them, from now
    /// on; `None` where there can be none (the embedded store belongs to one process).
    fn device_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<DeviceEvent>> {
        None
    }

    /// Tenants whose keys change, whichever node changes them, if the store is shared (so
    /// that every node drops its cached keys at once); `None` for a store one node holds.
    fn key_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        None
    }

    /// The hold covering a job: its own, or its tenant's.
    fn hold_on(&self, tenant: &str, job: &str) -> Result<Option<Hold>, MetaError>;

    /// Writes a consistent copy of the whole store, as of one moment, to a new database file
    /// at `to` (for `quire admin backup`); returns the rows copied. A shared database is
    /// backed up with its own tools instead.
    fn snapshot(&self, _to: &std::path::Path) -> Result<u64, MetaError> {
        Err(MetaError::Db(
            "the metadata is in PostgreSQL: back it up with pg_dump or continuous archiving \
             (docs/METADATA.md, \"Backups\"); `quire admin backup` copies the embedded store"
                .into(),
        ))
    }
}
