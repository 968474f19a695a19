//! The ingest pipeline: what happens to a page between the QUIC stream and the object store.
//!
//! ```text
//!  quire-server ──▶ hash ──▶ compress ──▶ seal ──▶ spool ──▶ store ──▶ erase
//!  (edge, auth)     (hash)  (compress)   (seal)   (spool)   (store)   (erase)
//!                                                   │ ack = "spooled"  │ ack = "stored"
//!                                                   ▼                  ▼
//!                                                scanner            scanner
//! ```
//!
//! Authentication happens before a page reaches this crate, in `quire-server`'s edge. Each
//! stage lives in the module named after it; [`ingest`] wires them together for one page
//! with bounded queues between them, the delivery task in [`store`] drains the [`spool`], and
//! [`retrieve`] runs the inverse path for `get`. Hashing, compression and encryption run on
//! rayon; the async runtime only moves bytes. A small page (`ack = "stored"`, at most
//! `single_put_limit`) is gathered whole and goes through hash, compress and seal in one rayon
//! task; a larger one streams through them chunk by chunk.
#![forbid(unsafe_code)]

pub mod compress;
pub mod erase;
pub mod hash;
pub mod ingest;
pub mod keys;
pub mod rekey;
pub mod retrieve;
pub mod seal;
pub mod spool;
pub mod store;
pub mod work;

#[cfg(test)]
mod replicas_tests;
pub use quire_vault as vault;

use std::sync::Arc;

use quire_codecs::sealed::{KekRef, SealError, SecretKey, DEFAULT_CHUNK_SIZE};
use quire_codecs::wire::ErrorCode;
use quire_storage::{Store, StoreError};

pub use ingest::{DigestAt, PageInput, Receipt};
pub use quire_vault::{KeyVault, Keyring, VaultError};
pub use spool::{AckMode, Spool, SpoolConfig, SpoolError};
pub use work::{DeliveryStats, PageFormat, Prior, StageTimes, StoreErrorKind};

/// Tunables of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Plaintext bytes per sealed chunk.
    pub chunk_size: u32,
    /// Pages whose sealed size is at most this are written in one conditional put; larger
    /// ones stream up as multipart uploads.
    pub single_put_limit: u64,
    /// Chunks sealing in parallel per page.
    pub seal_window: usize,
    /// Largest page accepted, in bytes.
    pub max_page_size: u64,
    /// When a page counts as stored for the scanner.
    pub ack: AckMode,
    /// With `ack = "stored"`, how long a page waits for the store before the scanner is told
    /// to retry (the page stays spooled and is delivered when the store answers).
    pub ack_timeout: std::time::Duration,
    /// Spool records uploading at once.
    pub upload_concurrency: usize,
    /// Pages being hashed, compressed and sealed at once; more wait (unread, so QUIC flow
    /// control holds their scanners back). Bounds the memory of seal windows.
    pub max_active_pages: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            chunk_size: DEFAULT_CHUNK_SIZE,
            single_put_limit: 8 * 1024 * 1024,
            seal_window: 8,
            max_page_size: 2 * 1024 * 1024 * 1024,
            ack: AckMode::Stored,
            ack_timeout: std::time::Duration::from_secs(30),
            upload_concurrency: 8,
            max_active_pages: 32,
        }
    }
}

/// A page could not be ingested or read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error("the page ended after {got} of its declared {declared} bytes")]
    Truncated { declared: u64, got: u64 },
    #[error("the page carried more than its declared {declared} bytes")]
    Oversized { declared: u64 },
    #[error("the page is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("the page's SHA-256 is {actual}, not the declared {declared}")]
    IntegrityMismatch { declared: String, actual: String },
    #[error("page {index} of this job is already stored with different content")]
    Conflict { index: u32 },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("object store: {0}")]
    Store(StoreError),
    #[error("key vault: {0}")]
    Vault(#[from] VaultError),
    #[error("stored object {key} failed to open: {source}")]
    Corrupt { key: String, source: SealError },
    #[error("the page was abandoned by the sender")]
    Abandoned,
    #[error("{0}")]
    Busy(SpoolError),
    #[error("the server is out of disk space: {0}")]
    ServerFull(SpoolError),
    #[error("spool: {0}")]
    Spool(SpoolError),
    #[error("the object cannot be delivered to the store: {0}")]
    Undeliverable(String),
    #[error("internal error (a bug in Quire; please report it): {0}")]
    Internal(String),
}

impl From<SpoolError> for PipelineError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Full { .. } | SpoolError::TenantShareFull { .. } => PipelineError::Busy(e),
            SpoolError::Io { ref source, .. } if out_of_space(source) => {
                PipelineError::ServerFull(e)
            }
            other => PipelineError::Spool(other),
        }
    }
}

impl From<StoreError> for PipelineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(k) => PipelineError::NotFound(k),
            other => PipelineError::Store(other),
        }
    }
}

impl PipelineError {
    /// The wire error code the scanner receives.
    pub fn code(&self) -> ErrorCode {
        match self {
            PipelineError::Truncated { .. }
            | PipelineError::Oversized { .. }
            | PipelineError::Abandoned => ErrorCode::Truncated,
            PipelineError::TooLarge { .. } => ErrorCode::TooLarge,
            PipelineError::IntegrityMismatch { .. } => ErrorCode::IntegrityMismatch,
            PipelineError::Conflict { .. } => ErrorCode::Conflict,
            PipelineError::NotFound(_) => ErrorCode::NotFound,
            PipelineError::Store(_) => ErrorCode::StoreUnavailable,
            PipelineError::Vault(VaultError::Shredded(_)) => ErrorCode::Forbidden,
            // The key service is down: like a store outage, retrying later works.
            PipelineError::Vault(VaultError::Backend {
                source: quire_vault::BackendError::Unavailable(_),
                ..
            }) => ErrorCode::StoreUnavailable,
            PipelineError::Busy(_) => ErrorCode::Busy,
            PipelineError::ServerFull(_) => ErrorCode::ServerFull,
            PipelineError::Corrupt { .. } => ErrorCode::Corrupt,
            PipelineError::Vault(_)
            | PipelineError::Spool(_)
            | PipelineError::Undeliverable(_)
            | PipelineError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn out_of_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// The shared state of the stages: where objects go and where keys come from.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The store of every tenant without a route of its own.
    pub store: Store,
    /// Tenants whose data lives in a store of their own (their region's).
    pub routes: Arc<std::collections::HashMap<String, Store>>,
    /// Tenants whose objects are also copied, as stored, to these stores (see `copies_for`).
    pub replicas: Arc<std::collections::HashMap<String, Vec<Store>>>,
    pub vault: Arc<dyn KeyVault>,
    /// Sealed objects on their way to the store.
    pub spool: Arc<Spool>,
    pub config: PipelineConfig,
    /// Permits for pages in the hash/compress/seal stages (see `max_active_pages`).
    active: Arc<tokio::sync::Semaphore>,
    /// What the way to the store met (retries, errors by kind).
    pub delivery: Arc<work::DeliveryStats>,
}

impl Pipeline {
    /// A pipeline writing through `spool` into `store`. Nothing reaches the store until
    /// [`Pipeline::spawn_delivery`] runs.
    pub fn new(
        store: Store,
        vault: Arc<dyn KeyVault>,
        spool: Arc<Spool>,
        config: PipelineConfig,
    ) -> Self {
        Pipeline {
            store,
            routes: Arc::default(),
            replicas: Arc::default(),
            vault,
            spool,
            active: Arc::new(tokio::sync::Semaphore::new(config.max_active_pages.max(1))),
            delivery: Arc::default(),
            config,
        }
    }

    /// Routes `tenant`'s objects to `store` (checked against regions by the caller's config).
    pub fn with_routes(mut self, routes: std::collections::HashMap<String, Store>) -> Self {
        self.routes = Arc::new(routes);
        self
    }

    /// Copies `tenant`'s objects, as stored, to `replicas` too (checked against the tenant's
    /// residency by the caller's config).
    pub fn with_replicas(
        mut self,
        replicas: std::collections::HashMap<String, Vec<Store>>,
    ) -> Self {
        self.replicas = Arc::new(
            replicas
                .into_iter()
                .filter(|(_, r)| !r.is_empty())
                .collect(),
        );
        self
    }

    /// The tenant's newest key: from the vault's memory when it has it (every page but the
    /// first few minutes' first), otherwise asked off the async workers, since on a cache miss
    /// the vault may call a KMS or HSM.
    pub async fn current_key(&self, tenant: &str) -> Result<(KekRef, SecretKey), PipelineError> {
        if let Some(found) = self.vault.cached_current_kek(tenant) {
            return Ok(found);
        }
        let tenant = tenant.to_string();
        self.ask_vault(move |vault| vault.current_kek(&tenant))
            .await
    }

    /// The key a sealed header names, asked off the async workers like [`Pipeline::current_key`].
    pub async fn key_named(&self, kek: &KekRef) -> Result<SecretKey, PipelineError> {
        let kek = kek.clone();
        self.ask_vault(move |vault| vault.kek(&kek)).await
    }

    async fn ask_vault<T: Send + 'static>(
        &self,
        ask: impl FnOnce(&dyn KeyVault) -> Result<T, VaultError> + Send + 'static,
    ) -> Result<T, PipelineError> {
        let vault = self.vault.clone();
        Ok(tokio::task::spawn_blocking(move || ask(vault.as_ref()))
            .await
            .map_err(|e| PipelineError::Internal(format!("key lookup task: {e}")))??)
    }

    /// The store that holds `tenant`'s objects. Every read and write goes through here, so a
    /// tenant's bytes only ever reach its own store.
    pub fn store_for(&self, tenant: &str) -> &Store {
        self.routes.get(tenant).unwrap_or(&self.store)
    }

    /// The stores that hold copies of `tenant`'s objects besides [`Pipeline::store_for`]
    /// (empty for most tenants). They get the sealed bytes exactly as stored: ciphertext only.
    pub fn replicas_for(&self, tenant: &str) -> &[Store] {
        self.replicas.get(tenant).map_or(&[], Vec::as_slice)
    }

    /// Every store that holds a copy of `tenant`'s objects: the primary first, then the
    /// replicas. Deletions go to all of them; reads try them in this order.
    pub fn copies_for(&self, tenant: &str) -> Vec<&Store> {
        std::iter::once(self.store_for(tenant))
            .chain(self.replicas_for(tenant))
            .collect()
    }

    /// Removes what writers killed mid-upload left among a finished job's objects (a local
    /// store's staging files: partial ciphertext, never visible as objects) in every copy, so
    /// that a committed or deleted job leaves no such bytes behind. Returns how many files
    /// went.
    pub async fn remove_job_leftovers(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<u32, StoreError> {
        let stores: Vec<Store> = self.copies_for(tenant).into_iter().cloned().collect();
        let prefix = keys::job_prefix(tenant, job_id);
        tokio::task::spawn_blocking(move || {
            stores
                .iter()
                .map(|s| s.remove_leftovers_under(&prefix))
                .sum::<Result<u32, StoreError>>()
        })
        .await
        .expect("leftover removal panicked")
    }
}

/// Reads the plaintext of `key` back whole (tests): the bytes passed on, and what the read
/// returned.
#[cfg(test)]
pub(crate) async fn read_plain(
    p: &Pipeline,
    tenant: &str,
    key: &str,
) -> (Vec<u8>, Result<([u8; 32], u64), PipelineError>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let collect = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(b) = rx.recv().await {
            v.extend_from_slice(&b);
        }
        v
    });
    let read = p.read_object(tenant, key, tx).await;
    (collect.await.expect("collector"), read)
}

/// A pipeline over the in-memory store with vault and spool under `dir`, delivering.
#[cfg(test)]
pub(crate) fn test_pipeline(dir: &std::path::Path, config: PipelineConfig) -> Pipeline {
    let vault = Arc::new(Keyring::file(&dir.join("vault")).unwrap());
    let spool = Spool::open(
        &dir.join("spool"),
        &dir.join("spool-keys"),
        SpoolConfig::default(),
    )
    .unwrap();
    let p = Pipeline::new(Store::memory(), vault, Arc::new(spool), config);
    p.spawn_delivery();
    p
}
