//! The vault's wrapped tenant keys in PostgreSQL, so that every node seals and opens under
//! the same key versions. A wrapped key opens nothing without the vault backend that wrapped
//! it (the master key, the KMS or the HSM), which the database never sees.

use std::path::PathBuf;

use quire_pipeline::vault::{RingStore, VaultError, Versions};

use super::{pg, PgMeta};
use crate::meta::MetaError;

/// One backend's keyring in the database.
#[derive(Debug)]
pub struct PgRings {
    meta: PgMeta,
    backend: String,
}

impl PgRings {
    pub(super) fn new(meta: PgMeta, backend: &str) -> PgRings {
        PgRings {
            meta,
            backend: backend.to_string(),
        }
    }

    fn failed(&self, tenant: &str) -> impl FnOnce(MetaError) -> VaultError + '_ {
        let place = self.place(tenant);
        move |e| VaultError::Io {
            path: place,
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl RingStore for PgRings {
    fn tenants(&self) -> Result<Vec<String>, VaultError> {
        let backend = self.backend.clone();
        self.meta
            .with(move |c| async move {
                Ok(c.query(
                    "SELECT DISTINCT tenant COLLATE \"C\" FROM key_rings k \
                     WHERE backend = $1 AND NOT EXISTS \
                       (SELECT 1 FROM key_rings_shredded s \
                        WHERE s.backend = $1 AND s.tenant = k.tenant) \
                     ORDER BY 1",
                    &[&backend],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect())
            })
            .map_err(self.failed("(every tenant)"))
    }

    fn read(&self, tenant: &str) -> Result<Versions, VaultError> {
        let (backend, t) = (self.backend.clone(), tenant.to_string());
        let (shredded, rows) = self
            .meta
            .with(move |c| async move {
                let shredded = c
                    .query_opt(
                        "SELECT 1 FROM key_rings_shredded WHERE backend = $1 AND tenant = $2",
                        &[&backend, &t],
                    )
                    .await
                    .map_err(pg)?
                    .is_some();
                let rows: Vec<(i64, Option<Vec<u8>>)> = c
                    .query(
                        "SELECT version, wrapped FROM key_rings \
                         WHERE backend = $1 AND tenant = $2 ORDER BY version",
                        &[&backend, &t],
                    )
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                Ok((shredded, rows))
            })
            .map_err(self.failed(tenant))?;
        if shredded {
            return Err(VaultError::Shredded(tenant.to_string()));
        }
        let mut versions = Versions::new();
        for (i, (version, wrapped)) in rows.into_iter().enumerate() {
            if version != i as i64 + 1 {
                return Err(VaultError::Malformed {
                    path: self.place(tenant),
                    reason: format!("version {} is missing", i + 1),
                });
            }
            versions.push(wrapped);
        }
        Ok(versions)
    }

    fn append(&self, tenant: &str, version: u32, wrapped: &[u8]) -> Result<bool, VaultError> {
        let (backend, t, w) = (self.backend.clone(), tenant.to_string(), wrapped.to_vec());
        self.meta
            .with(move |c| async move {
                let n = c
                    .execute(
                        "INSERT INTO key_rings (backend, tenant, version, wrapped) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&backend, &t, &i64::from(version), &w],
                    )
                    .await
                    .map_err(pg)?;
                Ok(n == 1)
            })
            .map_err(self.failed(tenant))
    }

    fn retire(&self, tenant: &str, version: u32) -> Result<(), VaultError> {
        let (backend, t) = (self.backend.clone(), tenant.to_string());
        self.meta
            .with(move |c| async move {
                c.execute(
                    "UPDATE key_rings SET wrapped = NULL \
                     WHERE backend = $1 AND tenant = $2 AND version = $3",
                    &[&backend, &t, &i64::from(version)],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
            .map_err(self.failed(tenant))
    }

    fn mark_shredded(&self, tenant: &str) -> Result<(), VaultError> {
        let (backend, t) = (self.backend.clone(), tenant.to_string());
        self.meta
            .with(move |c| async move {
                c.execute(
                    "INSERT INTO key_rings_shredded (backend, tenant) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                    &[&backend, &t],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
            .map_err(self.failed(tenant))
    }

    fn destroy(&self, tenant: &str) -> Result<(), VaultError> {
        let (backend, t) = (self.backend.clone(), tenant.to_string());
        self.meta
            .with(move |c| async move {
                c.execute(
                    "DELETE FROM key_rings WHERE backend = $1 AND tenant = $2",
                    &[&backend, &t],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
            .map_err(self.failed(tenant))
    }

    fn place(&self, tenant: &str) -> PathBuf {
        PathBuf::from(format!(
            "PostgreSQL {} table key_rings (backend {}, tenant {tenant})",
            self.meta.place, self.backend
        ))
    }
}

impl PgMeta {
    /// The keyring of vault backend `backend` kept in this database.
    pub fn key_rings(&self, backend: &str) -> PgRings {
        PgRings::new(self.clone(), backend)
    }
}
