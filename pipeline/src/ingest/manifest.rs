//! Writing a committed job's manifest: once, whatever attempts came before.

use std::time::Duration;

use quire_codecs::manifest::Manifest;
use quire_codecs::sealed::{self, Compression};
use quire_codecs::wire::PageEntry;

use crate::spool::{self, AckMode};
use crate::store::Direct;
use crate::{keys, Pipeline, PipelineError};

/// How long a commit waits for an earlier attempt's manifest to leave the spool.
const MANIFEST_DELIVERY_WAIT: Duration = Duration::from_secs(10);

impl Pipeline {
    /// The stored manifest lists the same pages: an earlier attempt's (or another node's,
    /// committing at the same moment), whose signature and time stay.
    async fn same_pages_stored(
        &self,
        tenant: &str,
        manifest: &Manifest,
    ) -> Result<(), PipelineError> {
        let existing = self.read_manifest(tenant, &manifest.job_id).await?;
        if existing.job_id == manifest.job_id && existing.pages == manifest.pages {
            Ok(())
        } else {
            Err(PipelineError::Conflict { index: 0 })
        }
    }

    /// Waits up to `limit` for the spool to deliver `key`; refuses as undeliverable (retry
    /// later) if it has not.
    async fn delivered_within(&self, key: &str, limit: Duration) -> Result<(), PipelineError> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.spool.pending(key).is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(PipelineError::Undeliverable(format!(
                    "{key}: an earlier attempt's copy is still waiting for the store; commit again later"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Seals and stores a job's manifest (through the spool, acknowledged like a page).
    /// Storing the same pages again is a no-op that keeps the stored signature and time
    /// (an earlier attempt's); different pages under the same job are a conflict.
    pub async fn write_manifest(
        &self,
        tenant: &str,
        manifest: &Manifest,
    ) -> Result<(), PipelineError> {
        let key = keys::manifest_key(tenant, &manifest.job_id);
        let body = manifest.encode();
        let as_entry = PageEntry {
            index: 0,
            name: "manifest".into(),
            size: body.len() as u64,
            sha256: crate::hash::sha256(&body),
        };
        if let Some(record) = self.spool.pending(&key) {
            match self.same_or_conflict(&record, &as_entry).await {
                Err(PipelineError::Conflict { .. }) => {
                    // An earlier attempt's manifest, signed at another time, is on its way
                    // to the store: compare the pages once it is there.
                    self.delivered_within(&key, MANIFEST_DELIVERY_WAIT).await?;
                }
                other => return other.map(drop),
            }
        }
        if self.stored_already(tenant, &key).await? {
            // An earlier attempt (lost answer, or a crash before the commit was recorded)
            // stored it: the same pages are success, and its signature and time stay.
            return self.same_pages_stored(tenant, manifest).await;
        }
        let (kek_ref, kek) = self.current_key(tenant).await?;
        let sealed = sealed::seal_all(
            &kek,
            kek_ref,
            &key,
            Compression::None,
            self.config.chunk_size,
            &body,
        );
        drop(kek);
        let record = if self.config.ack != AckMode::Spooled {
            let reservation = self
                .spool
                .reserve(tenant, spool::reservation_for(as_entry.size))
                .await?;
            match self
                .put_direct(tenant, &key, &as_entry, sealed, reservation)
                .await?
            {
                Direct::Stored(_) => return Ok(()),
                Direct::Exists => return self.same_pages_stored(tenant, manifest).await,
                Direct::Spilled(record) => record,
            }
        } else {
            self.spool_whole(tenant, &key, as_entry.sha256, as_entry.size, sealed)
                .await?
        };
        self.same_or_conflict(&record, &as_entry).await.map(drop)
    }
}
