//! The key vault: per-tenant key-encryption keys (KEKs), themselves sealed under a master key.
//!
//! [`KeyVault`] is the seam where a cloud KMS or HashiCorp Vault plugs in later. The embedded
//! [`FileVault`] keeps one file per tenant under `<dir>/tenants/`, each line one KEK version
//! wrapped (AES-256-GCM) under the master key. The master key comes from
//! `QUIRE_MASTER_KEY` (64 hex digits) or `<dir>/master.key`, which must not be readable by
//! group or others. Unwrapped KEKs stay in memory only, zeroized on drop, never logged.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use quire_codecs::sealed::{unwrap_key, wrap_key, KekRef, SecretKey, WRAPPED_KEY_LEN};
use zeroize::Zeroizing;

/// The KEK id every tenant key carries in this vault.
pub const KEK_ID: &str = "tenant";

/// A key could not be provided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("no key for tenant {tenant} (version {version})")]
    UnknownKey { tenant: String, version: u32 },
    #[error(
        "the keys of tenant {0} were destroyed (crypto-shredded); its data can no longer be opened"
    )]
    Shredded(String),
    #[error("master key file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    MasterKeyExposed { path: PathBuf, mode: u32 },
    #[error("master key is malformed: {0}")]
    BadMasterKey(&'static str),
    #[error("vault file {path} does not open under this master key: either the master key (master.key or QUIRE_MASTER_KEY) is not the one it was sealed under, or the file is damaged; restore the right master key or the file from your backup")]
    Corrupt { path: PathBuf },
    #[error("the master key {path} is missing, but {sealed} tenant key file(s) sealed under a master key exist beside it: restore master.key from your backup or set QUIRE_MASTER_KEY. No new master key is created while sealed keys exist: it could not open them")]
    MasterKeyMissing { path: PathBuf, sealed: usize },
    #[error("the key of tenant {tenant} is missing from the vault ({expected} version(s) known, {found} present): restore {path} from your backup. No new key is created for the tenant while its known keys are missing: data sealed under them would be lost for good")]
    KeysMissing {
        tenant: String,
        expected: u32,
        found: u32,
        path: PathBuf,
    },
    #[error("vault I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Supplies key-encryption keys. Implementations must never log key bytes.
pub trait KeyVault: Send + Sync + std::fmt::Debug {
    /// The tenant's newest KEK, created on first use.
    fn current_kek(&self, tenant: &str) -> Result<(KekRef, SecretKey), VaultError>;
    /// The KEK a sealed header names.
    fn kek(&self, kek: &KekRef) -> Result<SecretKey, VaultError>;
    /// Adds a new KEK version for the tenant; new objects use it, old ones still open.
    fn rotate(&self, tenant: &str) -> Result<u32, VaultError>;
    /// Destroys every KEK of the tenant, for good: nothing sealed under them opens again,
    /// and no new key is ever created for the tenant.
    fn shred(&self, tenant: &str) -> Result<(), VaultError>;
    /// How many KEK versions of the tenant the vault holds (0 for none yet).
    fn versions(&self, tenant: &str) -> Result<u32, VaultError>;
    /// Tells the vault that `versions` KEK versions of the tenant are known to exist (the
    /// metadata store records them): while fewer are present, no new version is created and
    /// [`KeyVault::current_kek`] fails with [`VaultError::KeysMissing`].
    fn expect_versions(&self, tenant: &str, versions: u32);
}

/// How long an unwrapped KEK may be served from memory before it is read and unwrapped again.
pub const CACHE_MAX_AGE: Duration = Duration::from_secs(300);
/// How many uses an unwrapped KEK may serve from memory before it is reloaded.
pub const CACHE_MAX_USES: u64 = 100_000;

/// A tenant's unwrapped KEKs held in memory, with what bounds their life there.
struct Cached {
    keys: Vec<SecretKey>,
    loaded: Instant,
    uses: AtomicU64,
}

impl Cached {
    fn fresh(&self) -> bool {
        self.loaded.elapsed() < CACHE_MAX_AGE && self.uses.load(Ordering::Relaxed) < CACHE_MAX_USES
    }
}

/// A vault in a local directory. See the module docs for the layout.
pub struct FileVault {
    dir: PathBuf,
    master: SecretKey,
    cache: RwLock<HashMap<String, Cached>>,
    /// KEK versions known to exist per tenant: the floor below which keys are missing.
    known: RwLock<HashMap<String, u32>>,
}

impl std::fmt::Debug for FileVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileVault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_hex_key(s: &str) -> Result<SecretKey, VaultError> {
    let s = s.trim();
    let mut k = Zeroizing::new([0u8; 32]);
    if s.len() != 64 {
        return Err(VaultError::BadMasterKey("expected 64 hex digits"));
    }
    hex::decode_to_slice(s, &mut k[..]).map_err(|_| VaultError::BadMasterKey("not hex"))?;
    Ok(SecretKey::from_bytes(*k))
}

fn master_ref() -> KekRef {
    KekRef {
        tenant: "quire-vault".into(),
        kek_id: "master".into(),
        version: 1,
    }
}

impl FileVault {
    /// Opens (or initialises) the vault in `dir`. The master key is taken from
    /// `QUIRE_MASTER_KEY` if set, else from `dir/master.key`, generated with mode 0600 if
    /// missing. Refuses a master key file that group or others can read.
    pub fn open(dir: &Path) -> Result<FileVault, VaultError> {
        std::fs::create_dir_all(dir.join("tenants")).map_err(io(dir))?;
        let sealed = Self::sealed_tenants(dir)?;
        let master = match std::env::var("QUIRE_MASTER_KEY") {
            Ok(v) => parse_hex_key(&v)?,
            Err(_) => Self::master_from_file(&dir.join("master.key"), sealed.len())?,
        };
        let vault = FileVault {
            dir: dir.to_path_buf(),
            master,
            cache: RwLock::new(HashMap::new()),
            known: RwLock::new(HashMap::new()),
        };
        // A wrong master key must stop the server here, not turn every request into an error.
        for tenant in &sealed {
            let n = vault.load(tenant)?.len() as u32;
            vault.expect_versions(tenant, n);
        }
        Ok(vault)
    }

    /// Tenants with a key file (shredded ones have none).
    fn sealed_tenants(dir: &Path) -> Result<Vec<String>, VaultError> {
        let tenants = dir.join("tenants");
        let mut out = Vec::new();
        for item in std::fs::read_dir(&tenants).map_err(io(&tenants))? {
            let name = item.map_err(io(&tenants))?.file_name();
            if let Some(t) = name.to_str().and_then(|n| n.strip_suffix(".kek")) {
                out.push(t.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn master_from_file(path: &Path, sealed: usize) -> Result<SecretKey, VaultError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if !path.exists() {
            if sealed > 0 {
                return Err(VaultError::MasterKeyMissing {
                    path: path.to_path_buf(),
                    sealed,
                });
            }
            let key = SecretKey::generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            let hexed = Zeroizing::new(hex::encode(key.expose()));
            f.write_all(hexed.as_bytes()).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            return Ok(key);
        }
        let mode = std::fs::metadata(path)
            .map_err(io(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(VaultError::MasterKeyExposed {
                path: path.to_path_buf(),
                mode: mode & 0o777,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
        parse_hex_key(&text)
    }

    fn tenant_file(&self, tenant: &str) -> PathBuf {
        self.dir.join("tenants").join(format!("{tenant}.kek"))
    }

    fn tombstone(&self, tenant: &str) -> PathBuf {
        self.dir.join("tenants").join(format!("{tenant}.shredded"))
    }

    fn check_not_shredded(&self, tenant: &str) -> Result<(), VaultError> {
        if self.tombstone(tenant).exists() {
            Err(VaultError::Shredded(tenant.to_string()))
        } else {
            Ok(())
        }
    }

    fn tenant_ref(tenant: &str, version: u32) -> KekRef {
        KekRef {
            tenant: tenant.into(),
            kek_id: KEK_ID.into(),
            version,
        }
    }

    /// Loads every version of a tenant's KEK from disk (empty if it has none yet).
    fn load(&self, tenant: &str) -> Result<Vec<SecretKey>, VaultError> {
        self.check_not_shredded(tenant)?;
        let path = self.tenant_file(tenant);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        let corrupt = || VaultError::Corrupt { path: path.clone() };
        let mut keys = Vec::new();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let (v, w) = line.split_once(' ').ok_or_else(corrupt)?;
            let version: u32 = v.parse().map_err(|_| corrupt())?;
            if version as usize != i + 1 {
                return Err(corrupt());
            }
            let mut wrapped = [0u8; WRAPPED_KEY_LEN];
            hex::decode_to_slice(w.trim(), &mut wrapped).map_err(|_| corrupt())?;
            let mut aad_ref = master_ref();
            aad_ref.kek_id = format!("{tenant}/{version}");
            let k = unwrap_key(&self.master, &aad_ref, &wrapped).map_err(|_| corrupt())?;
            keys.push(k);
        }
        Ok(keys)
    }

    /// Appends a KEK version. With `only_if_none`, does nothing if the tenant has one already:
    /// the check and the write happen under the same lock, so concurrent first uses create one
    /// version, not several.
    fn add_version(&self, tenant: &str, only_if_none: bool) -> Result<u32, VaultError> {
        let mut cache = self.cache.write().expect("vault lock poisoned");
        let mut keys = self.load(tenant)?;
        let known = self.known_versions(tenant);
        if (keys.len() as u32) < known {
            return Err(VaultError::KeysMissing {
                tenant: tenant.to_string(),
                expected: known,
                found: keys.len() as u32,
                path: self.tenant_file(tenant),
            });
        }
        if only_if_none && !keys.is_empty() {
            let n = keys.len() as u32;
            cache.insert(tenant.to_string(), Cached::new(keys));
            return Ok(n);
        }
        let version = keys.len() as u32 + 1;
        let kek = SecretKey::generate();
        let mut aad_ref = master_ref();
        aad_ref.kek_id = format!("{tenant}/{version}");
        let wrapped = wrap_key(&self.master, &aad_ref, &kek);
        let path = self.tenant_file(tenant);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        writeln!(f, "{version} {}", hex::encode(wrapped)).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        keys.push(kek);
        cache.insert(tenant.to_string(), Cached::new(keys));
        self.expect_versions(tenant, version);
        Ok(version)
    }

    fn known_versions(&self, tenant: &str) -> u32 {
        self.known
            .read()
            .expect("vault lock poisoned")
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }

    fn with_keys<T>(
        &self,
        tenant: &str,
        f: impl Fn(&[SecretKey]) -> Option<T>,
    ) -> Result<Option<T>, VaultError> {
        if let Some(c) = self.cache.read().expect("vault lock poisoned").get(tenant) {
            if c.fresh() {
                if let Some(t) = f(&c.keys) {
                    c.uses.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(t));
                }
            }
        }
        // Stale, missing, or lacking the wanted version: read and unwrap again. The old
        // entry's keys are zeroized as it drops.
        let keys = self.load(tenant)?;
        let out = f(&keys);
        self.cache
            .write()
            .expect("vault lock poisoned")
            .insert(tenant.to_string(), Cached::new(keys));
        Ok(out)
    }
}

impl KeyVault for FileVault {
    fn current_kek(&self, tenant: &str) -> Result<(KekRef, SecretKey), VaultError> {
        let newest = |keys: &[SecretKey]| {
            keys.last()
                .map(|k| (Self::tenant_ref(tenant, keys.len() as u32), k.clone()))
        };
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
        let unknown = || VaultError::UnknownKey {
            tenant: kek.tenant.clone(),
            version: kek.version,
        };
        if kek.kek_id != KEK_ID || kek.version == 0 {
            return Err(unknown());
        }
        let idx = kek.version as usize - 1;
        self.with_keys(&kek.tenant, |keys| keys.get(idx).cloned())?
            .ok_or_else(unknown)
    }

    fn rotate(&self, tenant: &str) -> Result<u32, VaultError> {
        self.add_version(tenant, false)
    }

    fn versions(&self, tenant: &str) -> Result<u32, VaultError> {
        Ok(self.load(tenant)?.len() as u32)
    }

    fn expect_versions(&self, tenant: &str, versions: u32) {
        let mut known = self.known.write().expect("vault lock poisoned");
        let floor = known.entry(tenant.to_string()).or_insert(0);
        *floor = (*floor).max(versions);
    }

    fn shred(&self, tenant: &str) -> Result<(), VaultError> {
        let mut cache = self.cache.write().expect("vault lock poisoned");
        // The tombstone first: from here on no key of the tenant is served or created.
        let tomb = self.tombstone(tenant);
        std::fs::write(&tomb, b"").map_err(io(&tomb))?;
        cache.remove(tenant);
        let path = self.tenant_file(tenant);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                // Best effort against later recovery from this file system: overwrite the
                // wrapped keys before unlinking. (On SSDs and copy-on-write file systems only
                // destroying the master key, or a KMS-held key, is a guarantee; see SECURITY.md.)
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.write_all(&vec![0u8; meta.len() as usize])
                    .map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        if let Ok(d) = std::fs::File::open(self.dir.join("tenants")) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Cached {
    fn new(keys: Vec<SecretKey>) -> Self {
        Cached {
            keys,
            loaded: Instant::now(),
            uses: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_rotate_and_stay_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let v = FileVault::open(dir.path()).unwrap();
        let (r1, k1) = v.current_kek("acme").unwrap();
        assert_eq!(r1.version, 1);
        assert_eq!(v.rotate("acme").unwrap(), 2);
        let (r2, k2) = v.current_kek("acme").unwrap();
        assert_eq!(r2.version, 2);
        assert_ne!(k1.expose(), k2.expose());

        let again = FileVault::open(dir.path()).unwrap();
        assert_eq!(again.kek(&r1).unwrap().expose(), k1.expose());
        assert_eq!(again.kek(&r2).unwrap().expose(), k2.expose());
        // The vault file never holds a KEK in clear.
        let text = std::fs::read_to_string(dir.path().join("tenants/acme.kek")).unwrap();
        assert!(!text.contains(&hex::encode(k1.expose())));
        assert!(matches!(
            again.kek(&FileVault::tenant_ref("acme", 3)),
            Err(VaultError::UnknownKey { .. })
        ));
    }

    #[test]
    fn shredding_destroys_every_version_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let v = FileVault::open(dir.path()).unwrap();
        let (r1, _) = v.current_kek("acme").unwrap();
        v.rotate("acme").unwrap();
        v.current_kek("beta").unwrap();
        v.shred("acme").unwrap();
        assert!(matches!(v.kek(&r1), Err(VaultError::Shredded(_))));
        assert!(matches!(
            v.current_kek("acme"),
            Err(VaultError::Shredded(_))
        ));
        assert!(matches!(v.rotate("acme"), Err(VaultError::Shredded(_))));
        let reopened = FileVault::open(dir.path()).unwrap();
        assert!(matches!(reopened.kek(&r1), Err(VaultError::Shredded(_))));
        assert!(!dir.path().join("tenants/acme.kek").exists());
        reopened.current_kek("beta").unwrap();
    }

    #[test]
    fn the_cache_is_bounded_by_uses() {
        let dir = tempfile::tempdir().unwrap();
        let v = FileVault::open(dir.path()).unwrap();
        let (r, _) = v.current_kek("acme").unwrap(); // one use
        for _ in 1..CACHE_MAX_USES {
            v.kek(&r).unwrap();
        }
        let stale = v.cache.read().unwrap().get("acme").map(|c| c.fresh());
        assert_eq!(
            stale,
            Some(false),
            "the entry should be spent after its use budget"
        );
        v.kek(&r).unwrap();
        let fresh = v.cache.read().unwrap().get("acme").map(|c| c.fresh());
        assert_eq!(fresh, Some(true), "a spent entry is reloaded");
    }

    #[test]
    fn concurrent_first_use_creates_one_version() {
        let dir = tempfile::tempdir().unwrap();
        let v = std::sync::Arc::new(FileVault::open(dir.path()).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let v = v.clone();
                std::thread::spawn(move || v.current_kek("acme").unwrap().0.version)
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 1);
        }
        assert_eq!(v.rotate("acme").unwrap(), 2);
    }

    #[test]
    fn no_new_master_key_while_sealed_keys_exist() {
        let dir = tempfile::tempdir().unwrap();
        FileVault::open(dir.path())
            .unwrap()
            .current_kek("acme")
            .unwrap();
        std::fs::remove_file(dir.path().join("master.key")).unwrap();
        assert!(matches!(
            FileVault::open(dir.path()),
            Err(VaultError::MasterKeyMissing { sealed: 1, .. })
        ));
        assert!(!dir.path().join("master.key").exists());
    }

    #[test]
    fn a_different_master_key_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        FileVault::open(dir.path())
            .unwrap()
            .current_kek("acme")
            .unwrap();
        let other = hex::encode([9u8; 32]);
        std::fs::write(dir.path().join("master.key"), other).unwrap();
        assert!(matches!(
            FileVault::open(dir.path()),
            Err(VaultError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_missing_tenant_key_is_never_replaced_by_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let v = FileVault::open(dir.path()).unwrap();
        v.current_kek("acme").unwrap();
        v.rotate("acme").unwrap();
        let file = dir.path().join("tenants/acme.kek");
        let saved = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        v.cache.write().unwrap().clear();
        assert!(matches!(
            v.current_kek("acme"),
            Err(VaultError::KeysMissing {
                expected: 2,
                found: 0,
                ..
            })
        ));
        assert!(matches!(
            v.rotate("acme"),
            Err(VaultError::KeysMissing { .. })
        ));
        assert!(!file.exists(), "no new key file was written");
        // A vault opened afresh knows nothing of acme; the server tells it what to expect.
        let fresh = FileVault::open(dir.path()).unwrap();
        fresh.expect_versions("acme", 2);
        assert!(fresh.current_kek("acme").is_err());
        std::fs::write(&file, saved).unwrap();
        assert_eq!(fresh.current_kek("acme").unwrap().0.version, 2);
    }

    #[test]
    fn world_readable_master_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        FileVault::open(dir.path()).unwrap();
        let p = dir.path().join("master.key");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            FileVault::open(dir.path()),
            Err(VaultError::MasterKeyExposed { .. })
        ));
    }
}
