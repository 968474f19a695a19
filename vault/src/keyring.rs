//! The keyring: each tenant's intermediate keys, wrapped by a backend on disk and unwrapped
//! into a bounded cache in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use quire_codecs::sealed::{KekRef, SecretKey};
use quire_key_cache::{Bounds, KeyCache, Lookup};

use crate::backend::{BackendError, KeyBackend, KeyName};
use crate::file::FileBackend;
use crate::ring_file::{RingDir, RingStore, Versions};
use crate::{KeyVault, VaultError, VaultStats};

/// The KEK id every tenant key carries in sealed headers.
pub const KEK_ID: &str = "tenant";

/// How long unwrapped keys may be served from memory before the backend is asked again.
pub const CACHE_MAX_AGE: Duration = Duration::from_secs(300);
/// How many uses unwrapped keys may serve from memory before the backend is asked again.
pub const CACHE_MAX_USES: u64 = 100_000;

/// The cache bounds [`Keyring::open`] uses (milliseconds and uses).
pub const DEFAULT_CACHE_BOUNDS: Bounds = Bounds {
    max_age: CACHE_MAX_AGE.as_millis() as u64,
    max_uses: CACHE_MAX_USES,
};

/// A tenant's unwrapped keys by version (index 0 is version 1); `None` once retired.
type Unwrapped = Vec<Option<SecretKey>>;

/// Intermediate keys per tenant over one [`KeyBackend`]. See the crate docs.
pub struct Keyring {
    backend: Box<dyn KeyBackend>,
    ring: Box<dyn RingStore>,
    cache: KeyCache<Unwrapped>,
    /// Key versions known to exist per tenant: the floor below which keys are missing.
    known: RwLock<HashMap<String, u32>>,
    /// Creating, rotating, retiring and shredding happen one at a time.
    writer: Mutex<()>,
    started: Instant,
    cache_hits: AtomicU64,
    backend_unwraps: AtomicU64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("backend", &self.backend.kind())
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the keyring in `dir` over `backend`, and unwraps every tenant's keys once: a
    /// backend that cannot open them (wrong master key, wrong KMS account, another token)
    /// stops the server here rather than failing every request later.
    pub fn open(dir: &Path, backend: Box<dyn KeyBackend>) -> Result<Keyring, VaultError> {
        Self::open_bounded(dir, backend, DEFAULT_CACHE_BOUNDS)
    }

    /// [`Keyring::open`] with other cache bounds (milliseconds and uses).
    pub fn open_bounded(
        dir: &Path,
        backend: Box<dyn KeyBackend>,
        bounds: Bounds,
    ) -> Result<Keyring, VaultError> {
        Self::open_in(Box::new(RingDir::open(dir)?), backend, bounds)
    }

    /// [`Keyring::open_bounded`] with the wrapped keys in `ring` (a store that other nodes
    /// may share).
    pub fn open_in(
        ring: Box<dyn RingStore>,
        backend: Box<dyn KeyBackend>,
        bounds: Bounds,
    ) -> Result<Keyring, VaultError> {
        let keyring = Keyring {
            backend,
            ring,
            cache: KeyCache::new(bounds),
            known: RwLock::new(HashMap::new()),
            writer: Mutex::new(()),
            started: Instant::now(),
            cache_hits: AtomicU64::new(0),
            backend_unwraps: AtomicU64::new(0),
        };
        for tenant in keyring.ring.tenants()? {
            let versions = keyring.ring.read(&tenant)?;
            let keys = keyring.unwrap_all(&tenant, &versions)?;
            keyring.expect_versions(&tenant, versions.len() as u32);
            // Keep what was just unwrapped: the first pages need no second trip to the backend.
            if let Lookup::Miss(ticket) = keyring.cache.get(&tenant, 0, |_| None::<()>) {
                keyring.cache.fill(&tenant, ticket, keyring.now(), keys);
            }
        }
        Ok(keyring)
    }

    /// The development layout: master key `dir/master.key` (or `QUIRE_MASTER_KEY`, created if
    /// neither exists and no key is sealed yet), wrapped keys in `dir/tenants/`.
    pub fn file(dir: &Path) -> Result<Keyring, VaultError> {
        Self::file_with_master(dir, &dir.join("master.key"))
    }

    /// Wrapped keys in `dir/tenants/`, master key at `master_key`.
    pub fn file_with_master(dir: &Path, master_key: &Path) -> Result<Keyring, VaultError> {
        let ring = RingDir::open(&ring_dir(dir, "file"))?;
        Self::file_in(Box::new(ring), master_key)
    }

    /// The file backend (master key at `master_key`) with the wrapped keys in `ring`.
    pub fn file_in(ring: Box<dyn RingStore>, master_key: &Path) -> Result<Keyring, VaultError> {
        let sealed = ring.tenants()?.len();
        let backend = FileBackend::open(master_key, sealed)?;
        Self::open_in(ring, Box::new(backend), DEFAULT_CACHE_BOUNDS)
    }

    /// How many tenants have keys here.
    pub fn tenants(&self) -> Result<Vec<String>, VaultError> {
        self.ring.tenants()
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn backend_error(
        &self,
        action: &'static str,
        tenant: &str,
    ) -> impl FnOnce(BackendError) -> VaultError + '_ {
        let tenant = tenant.to_string();
        move |source| match source {
            BackendError::Refused => VaultError::Corrupt {
                path: self.ring.place(&tenant),
            },
            source => VaultError::Backend {
                backend: self.backend.kind(),
                action,
                tenant,
                source,
            },
        }
    }

    fn unwrap_all(&self, tenant: &str, versions: &Versions) -> Result<Unwrapped, VaultError> {
        let mut out = Vec::with_capacity(versions.len());
        for (i, wrapped) in versions.iter().enumerate() {
            let name = KeyName {
                tenant,
                version: i as u32 + 1,
            };
            out.push(match wrapped {
                Some(w) => Some({
                    self.backend_unwraps.fetch_add(1, Ordering::Relaxed);
                    self.backend
                        .unwrap(name, w)
                        .map_err(self.backend_error("unwrap a key", tenant))?
                }),
                None => None,
            });
        }
        Ok(out)
    }

    /// Asks the cache, counting what it answers (for the metrics).
    fn cached<T>(&self, tenant: &str, pick: impl FnOnce(&Unwrapped) -> Option<T>) -> Lookup<T> {
        let found = self.cache.get(tenant, self.now(), pick);
        if matches!(found, Lookup::Hit(_)) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Answers `pick` from the cache, or from the backend (then caches what it unwrapped,
    /// unless a shred or a key change came in between).
    fn with_keys<T>(
        &self,
        tenant: &str,
        pick: impl Fn(&Unwrapped) -> Option<T>,
    ) -> Result<Option<T>, VaultError> {
        let ticket = match self.cached(tenant, &pick) {
            Lookup::Hit(t) => return Ok(Some(t)),
            Lookup::Shredded => return Err(VaultError::Shredded(tenant.to_string())),
            Lookup::Miss(ticket) => ticket,
        };
        let versions = self.read_ring(tenant)?;
        let keys = self.unwrap_all(tenant, &versions)?;
        let out = pick(&keys);
        if !self.cache.fill(tenant, ticket, self.now(), keys) && self.cache.is_shredded(tenant) {
            return Err(VaultError::Shredded(tenant.to_string()));
        }
        Ok(out)
    }

    /// The tenant's versions, read while no writer is appending: a reader racing an append
    /// could see half a line (the suite's eight-thread first use did, once).
    fn read_ring(&self, tenant: &str) -> Result<crate::ring_file::Versions, VaultError> {
        let _writer = self.writer.lock().expect("keyring lock poisoned");
        self.ring.read(tenant)
    }

    fn check_floor(&self, tenant: &str, found: usize) -> Result<(), VaultError> {
        let expected = self.known_versions(tenant);
        if (found as u32) < expected {
            return Err(VaultError::KeysMissing {
                tenant: tenant.to_string(),
                expected,
                found: found as u32,
                path: self.ring.place(tenant),
            });
        }
        Ok(())
    }

    /// Adds a version. With `only_if_none`, does nothing if the tenant has one already: the
    /// check and the write happen under one lock, so concurrent first uses make one version;
    /// where the ring is shared with other nodes, a node that loses the race for a version
    /// reads again and (rotating) tries the next one.
    fn add_version(&self, tenant: &str, only_if_none: bool) -> Result<u32, VaultError> {
        let _writer = self.writer.lock().expect("keyring lock poisoned");
        for _attempt in 0..8 {
            let versions = self.ring.read(tenant)?;
            self.check_floor(tenant, versions.len())?;
            if only_if_none && !versions.is_empty() {
                self.expect_versions(tenant, versions.len() as u32);
                return Ok(versions.len() as u32);
            }
            let version = versions.len() as u32 + 1;
            let name = KeyName { tenant, version };
            self.backend
                .prepare(name)
                .map_err(self.backend_error("create a key", tenant))?;
            let key = SecretKey::generate();
            let wrapped = self
                .backend
                .wrap(name, &key)
                .map_err(self.backend_error("wrap a key", tenant))?;
            let added = self.ring.append(tenant, version, &wrapped)?;
            self.cache.invalidate(tenant);
            if added {
                self.expect_versions(tenant, version);
                return Ok(version);
            }
        }
        Err(VaultError::Io {
            path: self.ring.place(tenant),
            source: std::io::Error::other("other nodes kept adding key versions; try again"),
        })
    }

    fn known_versions(&self, tenant: &str) -> u32 {
        self.known
            .read()
            .expect("keyring lock poisoned")
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }

    fn tenant_ref(tenant: &str, version: u32) -> KekRef {
        KekRef {
            tenant: tenant.into(),
            kek_id: KEK_ID.into(),
            version,
        }
    }
}

/// The tenant's newest key version among its unwrapped keys (`None` if it was retired).
fn newest(tenant: &str, keys: &Unwrapped) -> Option<(KekRef, SecretKey)> {
    keys.last()
        .and_then(|k| k.clone())
        .map(|k| (Keyring::tenant_ref(tenant, keys.len() as u32), k))
}

impl KeyVault for Keyring {
    fn cached_current_kek(&self, tenant: &str) -> Option<(KekRef, SecretKey)> {
        match self.cached(tenant, |keys| newest(tenant, keys)) {
            Lookup::Hit(found) => Some(found),
            Lookup::Miss(_) | Lookup::Shredded => None,
        }
    }

    fn current_kek(&self, tenant: &str) -> Result<(KekRef, SecretKey), VaultError> {
        let newest = |keys: &Unwrapped| newest(tenant, keys);
        if let Some(found) = self.with_keys(tenant, newest)? {
            return Ok(found);
        }
        self.add_version(tenant, true)?;
        self.with_keys(tenant, newest)?
            .ok_or(VaultError::UnknownKey {
                tenant: tenant.into(),
                version: 1,
            })
    }

    fn kek(&self, kek: &KekRef) -> Result<SecretKey, VaultError> {
        if kek.kek_id != KEK_ID || kek.version == 0 {
            return Err(VaultError::UnknownKey {
                tenant: kek.tenant.clone(),
                version: kek.version,
            });
        }
        let idx = kek.version as usize - 1;
        // Some(None): the version existed and was retired.
        let found = self.with_keys(&kek.tenant, |keys| keys.get(idx).cloned())?;
        match found {
            Some(Some(k)) => Ok(k),
            Some(None) => Err(VaultError::Retired {
                tenant: kek.tenant.clone(),
                version: kek.version,
            }),
            None => Err(VaultError::UnknownKey {
                tenant: kek.tenant.clone(),
                version: kek.version,
            }),
        }
    }

    fn rotate(&self, tenant: &str) -> Result<u32, VaultError> {
        self.add_version(tenant, false)
    }

    fn retire(&self, tenant: &str, version: u32) -> Result<(), VaultError> {
        let _writer = self.writer.lock().expect("keyring lock poisoned");
        let mut versions = self.ring.read(tenant)?;
        let newest = versions.len() as u32;
        if version == 0 || version > newest {
            return Err(VaultError::UnknownKey {
                tenant: tenant.into(),
                version,
            });
        }
        if version == newest {
            return Err(VaultError::RetireNewest {
                tenant: tenant.into(),
                version,
            });
        }
        if versions[version as usize - 1].take().is_none() {
            return Ok(());
        }
        // Off disk first, then out of memory (a lookup begun before the invalidation cannot
        // cache what it read), then out of the backend.
        self.ring.retire(tenant, version)?;
        self.cache.invalidate(tenant);
        self.backend
            .retire(KeyName { tenant, version })
            .map_err(self.backend_error("destroy a retired key", tenant))
    }

    fn versions(&self, tenant: &str) -> Result<u32, VaultError> {
        Ok(self.read_ring(tenant)?.len() as u32)
    }

    fn forget(&self, tenant: &str) {
        self.cache.invalidate(tenant);
    }

    fn expect_versions(&self, tenant: &str, versions: u32) {
        let mut known = self.known.write().expect("keyring lock poisoned");
        let floor = known.entry(tenant.to_string()).or_insert(0);
        *floor = (*floor).max(versions);
    }

    fn shred(&self, tenant: &str) -> Result<(), VaultError> {
        let _writer = self.writer.lock().expect("keyring lock poisoned");
        // In memory first: from here on nothing is served or cached, whenever it was fetched.
        self.cache.shred(tenant);
        // Then on disk, so a restart keeps refusing even if what follows fails.
        self.ring.mark_shredded(tenant)?;
        // Then the root keys: once they are gone, no copy of the wrapped keys opens.
        self.backend.shred(tenant).map_err(
            self.backend_error("destroy the tenant's keys (run the shred again)", tenant),
        )?;
        self.ring.destroy(tenant)
    }

    fn backend(&self) -> &'static str {
        self.backend.kind()
    }

    fn probe(&self) -> Result<(), VaultError> {
        self.backend
            .probe()
            .map_err(self.backend_error("answer", "(any)"))
    }

    fn stats(&self) -> VaultStats {
        VaultStats {
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            backend_unwraps: self.backend_unwraps.load(Ordering::Relaxed),
        }
    }
}

/// Where a keyring of `kind` keeps its files under the vault directory: the file backend's
/// `tenants/` is where every earlier version kept them.
pub fn ring_dir(vault_dir: &Path, kind: &str) -> PathBuf {
    match kind {
        "file" => vault_dir.join("tenants"),
        other => vault_dir.join(other).join("tenants"),
    }
}

#[cfg(test)]
#[path = "keyring_tests.rs"]
mod tests;
