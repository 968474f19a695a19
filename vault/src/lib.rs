//! Key custody: where each tenant's keys live and who may use them.
//!
//! Every sealed object has its own data key, wrapped under the tenant's *intermediate key*
//! of some version (the `KekRef` in the object's header). Intermediate keys are random, kept
//! by the [`Keyring`] in the vault directory only wrapped by a [`KeyBackend`], and held
//! unwrapped in memory for a bounded time and number of uses so that a page costs no trip to
//! the backend. The backend holds the root of each tenant's keys and only ever wraps and
//! unwraps; its keys never enter Quire's memory:
//!
//! - [`FileBackend`]: a master key file (development, or hosts without a KMS);
//! - [`AwsKms`]: one AWS KMS key per tenant (alias `quire/<tenant>`), the tenant and key
//!   version as encryption context;
//! - [`Pkcs11`]: any PKCS#11 HSM, one AES key per tenant and version inside the token.
//!
//! A copy of the vault directory therefore opens nothing without the backend; shredding a
//! tenant destroys its keys in the backend (KMS: disabled at once and scheduled for deletion;
//! HSM: destroyed) and its wrapped keys on disk, and no key fetched before the shred is
//! cached after it (`quire-key-cache`).

use std::path::PathBuf;

mod backend;
mod file;
mod keyring;
mod kms;
mod pkcs11;
mod ring_file;

pub use backend::{BackendError, KeyBackend, KeyName};
pub use file::FileBackend;
pub use keyring::{ring_dir, Keyring, CACHE_MAX_AGE, CACHE_MAX_USES, DEFAULT_CACHE_BOUNDS, KEK_ID};
pub use kms::{AwsKms, AwsKmsOptions};
pub use pkcs11::{Pkcs11, Pkcs11Options};
pub use quire_key_cache::Bounds as CacheBounds;
pub use ring_file::{RingDir, RingStore, Versions};

use quire_codecs::sealed::{KekRef, SecretKey};

/// A key could not be provided. Each message says whose problem it is and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("no key for tenant {tenant} (version {version})")]
    UnknownKey { tenant: String, version: u32 },
    #[error(
        "the keys of tenant {0} were destroyed (crypto-shredded); its data can no longer be opened"
    )]
    Shredded(String),
    #[error("key version {version} of tenant {tenant} was retired (destroyed); objects still under it cannot be opened. Restore the vault from a backup taken before `quire admin key retire`")]
    Retired { tenant: String, version: u32 },
    #[error("key version {version} is the newest of tenant {tenant}: new pages are sealed under it. Rotate first (`quire admin key rotate`), re-wrap (`quire admin key rewrap`), then retire it")]
    RetireNewest { tenant: String, version: u32 },
    #[error("master key file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    MasterKeyExposed { path: PathBuf, mode: u32 },
    #[error("master key is malformed: {0}")]
    BadMasterKey(&'static str),
    #[error("vault file {path} does not open under this vault's key: either the master key or key service is not the one it was sealed under, or the file is damaged; point the server at the right one or restore the file from your backup")]
    Corrupt { path: PathBuf },
    #[error("vault file {path} is malformed ({reason}); restore it from your backup")]
    Malformed { path: PathBuf, reason: String },
    #[error("the master key {path} is missing, but {sealed} tenant key file(s) sealed under a master key exist beside it: restore master.key from your backup or set QUIRE_MASTER_KEY. No new master key is created while sealed keys exist: it could not open them")]
    MasterKeyMissing { path: PathBuf, sealed: usize },
    #[error("the key of tenant {tenant} is missing from the vault ({expected} version(s) known, {found} present): restore {path} from your backup. No new key is created for the tenant while its known keys are missing: data sealed under them would be lost for good")]
    KeysMissing {
        tenant: String,
        expected: u32,
        found: u32,
        path: PathBuf,
    },
    #[error("the key service ({backend}) could not {action} for tenant {tenant}: {source}")]
    Backend {
        backend: &'static str,
        action: &'static str,
        tenant: String,
        source: BackendError,
    },
    #[error("vault I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the pipeline needs of key custody. Implementations never log key bytes.
pub trait KeyVault: Send + Sync + std::fmt::Debug {
    /// The tenant's newest intermediate key, created on first use.
    fn current_kek(&self, tenant: &str) -> Result<(KekRef, SecretKey), VaultError>;
    /// The key a sealed header names.
    fn kek(&self, kek: &KekRef) -> Result<SecretKey, VaultError>;
    /// [`KeyVault::current_kek`] if it can be answered from memory, without blocking; `None`
    /// means "ask [`KeyVault::current_kek`]" (which may call a KMS or HSM). Lets the ingest
    /// path skip a hand-off to a blocking thread per page.
    fn cached_current_kek(&self, _tenant: &str) -> Option<(KekRef, SecretKey)> {
        None
    }
    /// Adds a key version for the tenant; new objects use it, old ones still open.
    fn rotate(&self, tenant: &str) -> Result<u32, VaultError>;
    /// Destroys one old key version. The caller checks first that no object is under it.
    fn retire(&self, tenant: &str, version: u32) -> Result<(), VaultError>;
    /// Destroys every key of the tenant, for good: nothing sealed under them opens again,
    /// and no new key is ever created for the tenant.
    fn shred(&self, tenant: &str) -> Result<(), VaultError>;
    /// How many key versions the tenant has had, retired ones included (0 for none yet).
    fn versions(&self, tenant: &str) -> Result<u32, VaultError>;
    /// Tells the vault that `versions` key versions of the tenant are known to exist (the
    /// metadata store records them): while fewer are present, no new version is created and
    /// [`KeyVault::current_kek`] fails with [`VaultError::KeysMissing`].
    fn expect_versions(&self, tenant: &str, versions: u32);
    /// Forgets what is cached of the tenant's keys: another node rotated, retired or
    /// shredded them, so the next lookup reads the ring again.
    fn forget(&self, _tenant: &str) {}
    /// The backend's name, for messages and `serve --check`.
    fn backend(&self) -> &'static str;
    /// Reaches the backend (for readiness checks): `Ok` when keys can be had.
    fn probe(&self) -> Result<(), VaultError> {
        Ok(())
    }
    /// How often keys came from memory and how often the backend was asked (for metrics).
    fn stats(&self) -> VaultStats {
        VaultStats::default()
    }
}

/// Counters of a vault since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaultStats {
    /// Lookups answered from the cache of unwrapped keys.
    pub cache_hits: u64,
    /// Unwrap calls to the backend (one per key version on a cache miss).
    pub backend_unwraps: u64,
}
