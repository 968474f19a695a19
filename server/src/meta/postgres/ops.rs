//! Each [`MetaStore`] operation as PostgreSQL statements.
//!
//! Where the embedded store relies on its single writer, these rely on row locks
//! (`SELECT ... FOR UPDATE`), conditional updates and `ON CONFLICT`, so that nodes racing for
//! the same token, job or device see the same outcomes the embedded store gives one node.

use std::future::Future;

use deadpool_postgres::Object;
use quire_codecs::wire::{DeviceInfo, DeviceState, PageEntry, Role, UploadId};

use super::convert::{big, device, get_job, int, job_pages, job_row, JOB_COLUMNS};
use super::{pg, PgMeta};
use crate::auth::DeviceRecord;
use crate::meta::{
    now_unix, CommitView, DeviceChange, DeviceEvent, Grant, Hold, JobRow, MetaError, MetaStore,
    PageContext, StoredPage, TenantStats,
};

impl PgMeta {
    /// Runs `work` with a pooled connection and waits for its answer.
    pub(super) fn with<T, F, Fut>(&self, work: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, MetaError>> + Send + 'static,
    {
        let place = self.place.clone();
        self.call(move |pool| async move {
            let client = PgMeta::client(&pool, &place).await?;
            work(client).await
        })
    }

    /// Reads, changes and writes back one device under a row lock (see the embedded store's
    /// `update_device`: two administrators acting at once cannot undo each other).
    fn update_device(
        &self,
        device_id: &str,
        change: impl FnOnce(&mut DeviceRecord) -> Result<(), MetaError> + Send + 'static,
    ) -> Result<DeviceRecord, MetaError> {
        let id = device_id.to_string();
        self.with(move |mut c| async move {
            let txn = c.transaction().await.map_err(pg)?;
            let row = txn
                .query_opt(
                    "SELECT tenant, role, state, secret_hash FROM devices \
                     WHERE device_id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(pg)?
                .ok_or_else(|| MetaError::NoSuchDevice(id.clone()))?;
            let before = device(&id, &row)?;
            let mut rec = before.clone();
            change(&mut rec)?;
            let what = match rec.secret_hash != before.secret_hash {
                true => DeviceChange::Rotated,
                false => DeviceChange::State(rec.state),
            };
            // Numbered, and announced to every node when the transaction commits.
            txn.execute(
                "UPDATE devices SET state = $2, secret_hash = $3, \
                   change_seq = nextval('device_changes'), last_change = $4 \
                 WHERE device_id = $1",
                &[
                    &id,
                    &rec.state.as_str(),
                    &rec.secret_hash.as_slice(),
                    &what.as_str(),
                ],
            )
            .await
            .map_err(pg)?;
            txn.execute(
                "SELECT pg_notify($1, '')",
                &[&super::watch::DEVICES.channel],
            )
            .await
            .map_err(pg)?;
            txn.commit().await.map_err(pg)?;
            Ok(rec)
        })
    }
}

impl MetaStore for PgMeta {
    fn tenant_exists(&self, tenant: &str) -> Result<bool, MetaError> {
        let tenant = tenant.to_string();
        self.with(move |c| async move {
            let r = c
                .query_opt("SELECT 1 FROM tenants WHERE tenant = $1", &[&tenant])
                .await
                .map_err(pg)?;
            Ok(r.is_some())
        })
    }

    fn create_tenant(&self, tenant: &str) -> Result<(), MetaError> {
        let tenant = tenant.to_string();
        self.with(move |c| async move {
            let n = c
                .execute(
                    "INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&tenant],
                )
                .await
                .map_err(pg)?;
            match n {
                0 => Err(MetaError::Exists(format!("tenant {tenant}"))),
                _ => Ok(()),
            }
        })
    }

    fn ensure_tenant(&self, tenant: &str) -> Result<(), MetaError> {
        match self.create_tenant(tenant) {
            Err(MetaError::Exists(_)) => Ok(()),
            other => other,
        }
    }

    fn create_token(
        &self,
        token_hash: &[u8; 32],
        tenant: &str,
        expires_unix: u64,
    ) -> Result<(), MetaError> {
        let (hash, tenant) = (token_hash.to_vec(), tenant.to_string());
        // A far-future expiry means the same as the latest one PostgreSQL can hold.
        let expires = i64::try_from(expires_unix).unwrap_or(i64::MAX);
        self.with(move |c| async move {
            let n = c
                .execute(
                    "INSERT INTO enrollment_tokens (token_hash, tenant, expires_unix, used) \
                     SELECT $1, $2, $3, false WHERE EXISTS \
                       (SELECT 1 FROM tenants WHERE tenant = $2) \
                     ON CONFLICT (token_hash) DO UPDATE \
                       SET tenant = $2, expires_unix = $3, used = false",
                    &[&hash, &tenant, &expires],
                )
                .await
                .map_err(pg)?;
            match n {
                0 => Err(MetaError::NoSuchTenant(tenant)),
                _ => Ok(()),
            }
        })
    }

    fn enroll(
        &self,
        token_hash: &[u8; 32],
        now_unix: u64,
        device_id: &str,
        secret_hash: [u8; 32],
    ) -> Result<DeviceRecord, MetaError> {
        let (hash, id) = (token_hash.to_vec(), device_id.to_string());
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        self.with(move |mut c| async move {
            let txn = c.transaction().await.map_err(pg)?;
            // The row lock makes a racing redemption wait, then see `used` and match nothing.
            let tenant: String = txn
                .query_opt(
                    "UPDATE enrollment_tokens SET used = true \
                     WHERE token_hash = $1 AND NOT used AND expires_unix > $2 \
                     RETURNING tenant",
                    &[&hash, &now],
                )
                .await
                .map_err(pg)?
                .ok_or(MetaError::BadToken)?
                .get(0);
            let rec = DeviceRecord {
                device_id: id.clone(),
                tenant,
                role: Role::Device,
                state: DeviceState::Pending,
                secret_hash,
            };
            let added = txn
                .execute(
                    "INSERT INTO devices (device_id, tenant, role, state, secret_hash) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &id,
                        &rec.tenant,
                        &rec.role.as_str(),
                        &rec.state.as_str(),
                        &rec.secret_hash.as_slice(),
                    ],
                )
                .await
                .map_err(pg)?;
            if added == 0 {
                // Dropping the transaction rolls it back: the token stays unused.
                return Err(MetaError::Exists(format!("device {id}")));
            }
            txn.commit().await.map_err(pg)?;
            Ok(rec)
        })
    }

    fn put_grant(&self, tenant: &str, partner: &str, grant: &Grant) -> Result<(), MetaError> {
        let (tenant, partner, grant) = (tenant.to_string(), partner.to_string(), grant.clone());
        self.with(move |c| async move {
            let expires = i64::try_from(grant.expires_unix).unwrap_or(i64::MAX);
            c.execute(
                "INSERT INTO support_grants (tenant, partner, expires_unix, reason, granted_by) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, partner) DO UPDATE \
                 SET expires_unix = $3, reason = $4, granted_by = $5",
                &[
                    &tenant,
                    &partner,
                    &expires,
                    &grant.reason,
                    &grant.granted_by,
                ],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
    }

    fn remove_grant(&self, tenant: &str, partner: &str) -> Result<bool, MetaError> {
        let (tenant, partner) = (tenant.to_string(), partner.to_string());
        self.with(move |c| async move {
            let n = c
                .execute(
                    "DELETE FROM support_grants WHERE tenant = $1 AND partner = $2",
                    &[&tenant, &partner],
                )
                .await
                .map_err(pg)?;
            Ok(n > 0)
        })
    }

    fn grant(&self, tenant: &str, partner: &str) -> Result<Option<Grant>, MetaError> {
        let (tenant, partner) = (tenant.to_string(), partner.to_string());
        self.with(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT expires_unix, reason, granted_by FROM support_grants \
                     WHERE tenant = $1 AND partner = $2",
                    &[&tenant, &partner],
                )
                .await
                .map_err(pg)?;
            row.map(|r| {
                Ok(Grant {
                    expires_unix: int(r.get(0), "grant expiry")?,
                    reason: r.get(1),
                    granted_by: r.get(2),
                })
            })
            .transpose()
        })
    }

    fn stats(&self, tenant: &str) -> Result<TenantStats, MetaError> {
        let tenant = tenant.to_string();
        self.with(move |c| async move {
            let r = c
                .query_one(
                    "SELECT (SELECT count(*) FROM devices WHERE tenant = $1), \
                            count(*), count(*) FILTER (WHERE committed), \
                            COALESCE(sum(bytes) FILTER (WHERE committed), 0)::bigint \
                     FROM jobs WHERE tenant = $1",
                    &[&tenant],
                )
                .await
                .map_err(pg)?;
            Ok(TenantStats {
                devices: int(r.get(0), "device count")?,
                jobs: int(r.get(1), "job count")?,
                committed_jobs: int(r.get(2), "job count")?,
                committed_bytes: int(r.get(3), "byte count")?,
            })
        })
    }

    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, MetaError> {
        let id = device_id.to_string();
        self.with(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT tenant, role, state, secret_hash FROM devices WHERE device_id = $1",
                    &[&id],
                )
                .await
                .map_err(pg)?;
            row.map(|r| device(&id, &r)).transpose()
        })
    }

    fn put_device(&self, rec: &DeviceRecord) -> Result<(), MetaError> {
        let rec = rec.clone();
        self.with(move |c| async move {
            let n = c
                .execute(
                    "INSERT INTO devices (device_id, tenant, role, state, secret_hash) \
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS \
                       (SELECT 1 FROM tenants WHERE tenant = $2) \
                     ON CONFLICT (device_id) DO UPDATE \
                     SET tenant = $2, role = $3, state = $4, secret_hash = $5",
                    &[
                        &rec.device_id,
                        &rec.tenant,
                        &rec.role.as_str(),
                        &rec.state.as_str(),
                        &rec.secret_hash.as_slice(),
                    ],
                )
                .await
                .map_err(pg)?;
            match n {
                0 => Err(MetaError::NoSuchTenant(rec.tenant)),
                _ => Ok(()),
            }
        })
    }

    fn set_device_state(
        &self,
        device_id: &str,
        state: DeviceState,
    ) -> Result<DeviceRecord, MetaError> {
        self.update_device(device_id, crate::meta::devices::set_state(device_id, state))
    }

    fn rotate_secret(
        &self,
        device_id: &str,
        secret_hash: [u8; 32],
    ) -> Result<DeviceRecord, MetaError> {
        self.update_device(
            device_id,
            crate::meta::devices::rotate(device_id, secret_hash),
        )
    }

    fn kek_versions(&self, tenant: &str) -> Result<u32, MetaError> {
        let tenant = tenant.to_string();
        self.with(move |c| async move {
            let row = c
                .query_opt(
                    "SELECT versions FROM kek_versions WHERE tenant = $1",
                    &[&tenant],
                )
                .await
                .map_err(pg)?;
            match row {
                None => Ok(0),
                Some(r) => int(r.get(0), "key version count"),
            }
        })
    }

    fn record_kek_versions(&self, tenant: &str, versions: u32) -> Result<(), MetaError> {
        let tenant = tenant.to_string();
        self.with(move |c| async move {
            c.execute(
                "INSERT INTO kek_versions (tenant, versions) VALUES ($1, $2) \
                 ON CONFLICT (tenant) DO UPDATE \
                 SET versions = GREATEST(kek_versions.versions, EXCLUDED.versions)",
                &[&tenant, &i64::from(versions)],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
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
        self.view(tenant, job)
    }

    fn forget_uncommitted(&self, tenant: &str, job: &str) -> Result<Vec<String>, MetaError> {
        self.forget_job(tenant, job)
    }

    fn all_devices(&self) -> Result<Vec<DeviceInfo>, MetaError> {
        self.with(move |c| async move {
            c.query(
                "SELECT tenant, role, state, secret_hash, device_id FROM devices \
                 ORDER BY device_id COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                let rec = device(r.get(4), r)?;
                Ok(DeviceInfo {
                    device_id: rec.device_id,
                    tenant: rec.tenant,
                    role: rec.role,
                    state: rec.state,
                })
            })
            .collect()
        })
    }

    fn job(&self, tenant: &str, job: &str) -> Result<Option<JobRow>, MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        self.with(move |c| async move { get_job(&c, &tenant, &job).await })
    }

    fn commit_job(
        &self,
        tenant: &str,
        job: &str,
        page_count: u32,
        bytes: u64,
    ) -> Result<(), MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        let bytes = big(bytes, "job size")?;
        self.with(move |c| async move {
            let now = now_unix();
            c.execute(
                "INSERT INTO jobs (tenant, job, committed, page_count, bytes, committed_unix, \
                                   created_unix) \
                 VALUES ($1, $2, true, $3, $4, $5, 0) \
                 ON CONFLICT (tenant, job) DO UPDATE SET committed = true, page_count = $3, \
                   bytes = $4, committed_unix = $5, delivered_unix = NULL, deleted_unix = NULL",
                &[&tenant, &job, &i64::from(page_count), &bytes, &now],
            )
            .await
            .map_err(pg)?;
            Ok(())
        })
    }

    fn record_pages(&self, pages: &[StoredPage]) -> Result<Vec<usize>, MetaError> {
        super::batch::record_pages(self, pages)
    }

    fn pages(&self, tenant: &str, job: &str) -> Result<Vec<PageEntry>, MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        self.with(move |c| async move {
            Ok(job_pages(&c, &tenant, &job)
                .await?
                .into_iter()
                .map(|(entry, _)| entry)
                .collect())
        })
    }

    fn page_recorded(&self, tenant: &str, job: &str, index: u32) -> Result<bool, MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        self.with(move |c| async move {
            let r = c
                .query_opt(
                    "SELECT 1 FROM pages WHERE tenant = $1 AND job = $2 AND idx = $3",
                    &[&tenant, &job, &i64::from(index)],
                )
                .await
                .map_err(pg)?;
            Ok(r.is_some())
        })
    }

    fn page_context(
        &self,
        tenant: &str,
        job: &str,
        device_id: &str,
        index: u32,
    ) -> Result<PageContext, MetaError> {
        self.context(tenant, job, device_id, index)
    }

    fn tenants(&self) -> Result<Vec<String>, MetaError> {
        self.with(move |c| async move {
            Ok(c.query(
                "SELECT tenant FROM tenants ORDER BY tenant COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn jobs(&self, tenant: &str) -> Result<Vec<(String, JobRow)>, MetaError> {
        let tenant = tenant.to_string();
        self.with(move |c| async move {
            let sql = format!(
                "SELECT {JOB_COLUMNS}, job FROM jobs WHERE tenant = $1 \
                 ORDER BY job COLLATE \"C\""
            );
            c.query(&sql, &[&tenant])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| Ok((r.get(9), job_row(r)?)))
                .collect()
        })
    }

    fn mark_delivered(&self, tenant: &str, job: &str, at: i64) -> Result<JobRow, MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        self.with(move |c| async move {
            let sql = format!(
                "UPDATE jobs SET delivered_unix = COALESCE(delivered_unix, $3) \
                 WHERE tenant = $1 AND job = $2 AND committed RETURNING {JOB_COLUMNS}"
            );
            match c.query_opt(&sql, &[&tenant, &job, &at]).await.map_err(pg)? {
                Some(r) => job_row(&r),
                None => match get_job(&c, &tenant, &job).await? {
                    Some(_) => Err(MetaError::NotFound(format!("committed job {job}"))),
                    None => Err(MetaError::NotFound(format!("job {job}"))),
                },
            }
        })
    }

    fn mark_deleted(&self, tenant: &str, job: &str, at: i64) -> Result<(), MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        self.with(move |mut c| async move {
            let txn = c.transaction().await.map_err(pg)?;
            let n = txn
                .execute(
                    "UPDATE jobs SET deleted_unix = COALESCE(deleted_unix, $3) \
                     WHERE tenant = $1 AND job = $2",
                    &[&tenant, &job, &at],
                )
                .await
                .map_err(pg)?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("job {job}")));
            }
            // The page rows (names, sizes, digests) go with the objects: see `forget.rs`.
            txn.execute(
                "DELETE FROM pages WHERE tenant = $1 AND job = $2",
                &[&tenant, &job],
            )
            .await
            .map_err(pg)?;
            txn.commit().await.map_err(pg)
        })
    }

    fn forget_pages(&self, tenant: &str) -> Result<usize, MetaError> {
        let tenant = tenant.to_string();
        self.with(move |c| async move {
            let n = c
                .execute("DELETE FROM pages WHERE tenant = $1", &[&tenant])
                .await
                .map_err(pg)?;
            Ok(n as usize)
        })
    }

    fn set_hold(
        &self,
        tenant: &str,
        job: Option<&str>,
        hold: Option<&Hold>,
    ) -> Result<bool, MetaError> {
        let (tenant, job) = (tenant.to_string(), job.unwrap_or("").to_string());
        let hold = hold.cloned();
        self.with(move |mut c| async move {
            let txn = c.transaction().await.map_err(pg)?;
            let had = txn
                .execute(
                    "DELETE FROM legal_holds WHERE tenant = $1 AND job = $2",
                    &[&tenant, &job],
                )
                .await
                .map_err(pg)?
                > 0;
            if let Some(h) = hold {
                txn.execute(
                    "INSERT INTO legal_holds (tenant, job, reason, held_by, since_unix) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, job) DO UPDATE \
                     SET reason = $3, held_by = $4, since_unix = $5",
                    &[&tenant, &job, &h.reason, &h.by, &h.since_unix],
                )
                .await
                .map_err(pg)?;
            }
            txn.commit().await.map_err(pg)?;
            Ok(had)
        })
    }

    fn lead(&self, work: &str) -> Result<bool, MetaError> {
        self.lead_work(work)
    }

    fn key_rings(&self, backend: &str) -> Option<Box<dyn quire_pipeline::vault::RingStore>> {
        Some(Box::new(PgMeta::key_rings(self, backend)))
    }

    fn device_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<DeviceEvent>> {
        Some(self.watch_devices())
    }

    fn key_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        Some(self.watch_keys())
    }

    fn exchange_claims(
        &self,
        node: &str,
        claims: &[(String, f64)],
    ) -> Result<Option<std::collections::HashMap<String, f64>>, MetaError> {
        self.claims(node, claims).map(Some)
    }

    fn audit_trail(&self, checkpoint_every: u64) -> Option<Box<dyn quire_audit::Trail>> {
        Some(Box::new(super::PgTrail::new(
            self.clone(),
            checkpoint_every,
        )))
    }

    fn hold_on(&self, tenant: &str, job: &str) -> Result<Option<Hold>, MetaError> {
        let (tenant, job) = (tenant.to_string(), job.to_string());
        self.with(move |c| async move {
            // The job's own hold first ('' sorts before any job id), then the tenant's.
            let row = c
                .query_opt(
                    "SELECT reason, held_by, since_unix FROM legal_holds \
                     WHERE tenant = $1 AND job IN ($2, '') ORDER BY job DESC LIMIT 1",
                    &[&tenant, &job],
                )
                .await
                .map_err(pg)?;
            Ok(row.map(|r| Hold {
                reason: r.get(0),
                by: r.get(1),
                since_unix: r.get(2),
            }))
        })
    }
}
