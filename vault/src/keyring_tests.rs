use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

fn file_keyring(dir: &Path) -> Keyring {
    Keyring::file(dir).unwrap()
}

#[test]
fn keys_persist_rotate_and_stay_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let v = file_keyring(dir.path());
    let (r1, k1) = v.current_kek("acme").unwrap();
    assert_eq!(r1.version, 1);
    assert_eq!(v.rotate("acme").unwrap(), 2);
    let (r2, k2) = v.current_kek("acme").unwrap();
    assert_eq!(r2.version, 2);
    assert_ne!(k1.expose(), k2.expose());

    let again = file_keyring(dir.path());
    assert_eq!(again.kek(&r1).unwrap().expose(), k1.expose());
    assert_eq!(again.kek(&r2).unwrap().expose(), k2.expose());
    // The vault file never holds a key in clear.
    let text = std::fs::read_to_string(dir.path().join("tenants/acme.kek")).unwrap();
    assert!(!text.contains(&hex::encode(k1.expose())));
    assert!(matches!(
        again.kek(&Keyring::tenant_ref("acme", 3)),
        Err(VaultError::UnknownKey { .. })
    ));
}

/// A keyring file and master key as the first versions wrote them (the wrapped key below
/// was made by that code): it must open, with the same key, forever.
#[test]
fn a_vault_written_by_earlier_versions_opens() {
    let dir = tempfile::tempdir().unwrap();
    let master = [7u8; 32];
    let kek = SecretKey::from_bytes([42u8; 32]);
    let wrapped = quire_codecs::sealed::dangerous_wrap_key_with_nonce(
        &SecretKey::from_bytes(master),
        &KekRef {
            tenant: "quire-vault".into(),
            kek_id: "acme/1".into(),
            version: 1,
        },
        &kek,
        [1u8; 12],
    );
    std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
    std::fs::write(
        dir.path().join("tenants/acme.kek"),
        format!("1 {}\n", hex::encode(wrapped)),
    )
    .unwrap();
    let path = dir.path().join("master.key");
    std::fs::write(&path, hex::encode(master)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let v = file_keyring(dir.path());
    let (r, k) = v.current_kek("acme").unwrap();
    assert_eq!(r, Keyring::tenant_ref("acme", 1));
    assert_eq!(k.expose(), kek.expose());
}

#[test]
fn shredding_destroys_every_version_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let v = file_keyring(dir.path());
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
    let reopened = file_keyring(dir.path());
    assert!(matches!(reopened.kek(&r1), Err(VaultError::Shredded(_))));
    assert!(!dir.path().join("tenants/acme.kek").exists());
    reopened.current_kek("beta").unwrap();
    // Shredding again (say, after a backend failure) is allowed.
    reopened.shred("acme").unwrap();
}

/// The lookup that skips the blocking pool answers exactly what `current_kek` would, and
/// nothing it could not: not before a key is known, not an older version after a rotation,
/// nothing after a shred.
#[test]
fn the_memory_only_lookup_never_answers_a_stale_key() {
    let dir = tempfile::tempdir().unwrap();
    let v = file_keyring(dir.path());
    assert!(v.cached_current_kek("acme").is_none());
    let (r1, k1) = v.current_kek("acme").unwrap();
    let (c1, ck1) = v
        .cached_current_kek("acme")
        .expect("cached after first use");
    assert_eq!((c1, ck1.expose()), (r1, k1.expose()));
    v.rotate("acme").unwrap();
    if let Some((r, _)) = v.cached_current_kek("acme") {
        assert_eq!(r.version, 2, "a rotation must not leave version 1 served");
    }
    let (r2, k2) = v.current_kek("acme").unwrap();
    let (c2, ck2) = v.cached_current_kek("acme").unwrap();
    assert_eq!((c2, ck2.expose()), (r2, k2.expose()));
    v.shred("acme").unwrap();
    assert!(v.cached_current_kek("acme").is_none());
}

#[test]
fn retiring_destroys_one_old_version_only() {
    let dir = tempfile::tempdir().unwrap();
    let v = file_keyring(dir.path());
    let (r1, _) = v.current_kek("acme").unwrap();
    assert!(matches!(
        v.retire("acme", 1),
        Err(VaultError::RetireNewest { version: 1, .. })
    ));
    v.rotate("acme").unwrap();
    let (r2, k2) = v.current_kek("acme").unwrap();
    v.kek(&r1).unwrap();
    v.retire("acme", 1).unwrap();
    assert!(matches!(
        v.kek(&r1),
        Err(VaultError::Retired { version: 1, .. })
    ));
    assert_eq!(v.kek(&r2).unwrap().expose(), k2.expose());
    v.retire("acme", 1).unwrap(); // again: nothing left to do
    assert!(matches!(
        v.retire("acme", 3),
        Err(VaultError::UnknownKey { .. })
    ));
    // After a restart too, and versions count the retired one.
    let again = file_keyring(dir.path());
    assert!(matches!(again.kek(&r1), Err(VaultError::Retired { .. })));
    assert_eq!(again.versions("acme").unwrap(), 2);
    assert_eq!(again.rotate("acme").unwrap(), 3);
}

#[test]
fn the_cache_is_bounded_by_uses() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, calls) = Counting::new(FileBackend::new(SecretKey::generate()));
    let v = Keyring::open_bounded(
        dir.path(),
        Box::new(backend),
        Bounds {
            max_age: u64::MAX,
            max_uses: 10,
        },
    )
    .unwrap();
    let (r, _) = v.current_kek("acme").unwrap();
    let after_create = calls.load(Ordering::SeqCst);
    for _ in 0..9 {
        v.kek(&r).unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        after_create,
        "served from memory"
    );
    v.kek(&r).unwrap();
    v.kek(&r).unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        after_create + 1,
        "a spent entry is unwrapped again, once"
    );
}

#[test]
fn the_keys_unwrapped_at_open_serve_the_first_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let master = SecretKey::generate();
    let (r, k) = {
        let v = Keyring::open(dir.path(), Box::new(FileBackend::new(master.clone()))).unwrap();
        v.current_kek("acme").unwrap()
    };
    let (backend, calls) = Counting::new(FileBackend::new(master));
    let v = Keyring::open(dir.path(), Box::new(backend)).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one unwrap at open");
    assert_eq!(v.kek(&r).unwrap().expose(), k.expose());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the lookup was served from memory"
    );
}

/// Eight threads use a new tenant at once: one version is made, and no thread reads the
/// keyring file while the line is being appended (a torn read once failed the suite).
#[test]
fn concurrent_first_use_creates_one_version() {
    for _ in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let v = Arc::new(file_keyring(dir.path()));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let v = v.clone();
                std::thread::spawn(move || v.current_kek("acme").map(|(r, _)| r.version))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), 1);
        }
        assert_eq!(v.rotate("acme").unwrap(), 2);
    }
}

/// Readers keep asking for a key, slowly unwrapped, while the tenant is shredded: once the
/// shred has returned, no reader is answered with a key again (a fetch begun before the
/// shred is not cached after it).
#[test]
fn no_key_is_served_after_a_shred_under_concurrent_readers() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let (backend, _) = Counting::new(FileBackend::new(SecretKey::generate()));
        let v = Arc::new(
            Keyring::open_bounded(
                dir.path(),
                Box::new(backend.slow()),
                Bounds {
                    max_age: u64::MAX,
                    max_uses: 3,
                },
            )
            .unwrap(),
        );
        let (r, _) = v.current_kek("acme").unwrap();
        let shredded = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (v, r, shredded) = (v.clone(), r.clone(), shredded.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let was_shredded = shredded.load(Ordering::SeqCst);
                        let got = v.kek(&r);
                        if was_shredded {
                            assert!(
                                matches!(got, Err(VaultError::Shredded(_))),
                                "a key was served after the shred returned"
                            );
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(2));
        v.shred("acme").unwrap();
        shredded.store(true, Ordering::SeqCst);
        for r in readers {
            r.join().unwrap();
        }
    }
}

#[test]
fn no_new_master_key_while_sealed_keys_exist() {
    let dir = tempfile::tempdir().unwrap();
    file_keyring(dir.path()).current_kek("acme").unwrap();
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    assert!(matches!(
        Keyring::file(dir.path()),
        Err(VaultError::MasterKeyMissing { sealed: 1, .. })
    ));
    assert!(!dir.path().join("master.key").exists());
}

#[test]
fn a_different_master_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    file_keyring(dir.path()).current_kek("acme").unwrap();
    let other = hex::encode([9u8; 32]);
    std::fs::write(dir.path().join("master.key"), other).unwrap();
    assert!(matches!(
        Keyring::file(dir.path()),
        Err(VaultError::Corrupt { .. })
    ));
}

#[test]
fn a_missing_tenant_key_is_never_replaced_by_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let v = file_keyring(dir.path());
    v.current_kek("acme").unwrap();
    v.rotate("acme").unwrap();
    let file = dir.path().join("tenants/acme.kek");
    let saved = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    v.cache.invalidate("acme");
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
    let fresh = file_keyring(dir.path());
    fresh.expect_versions("acme", 2);
    assert!(fresh.current_kek("acme").is_err());
    std::fs::write(&file, saved).unwrap();
    assert_eq!(fresh.current_kek("acme").unwrap().0.version, 2);
}

#[test]
fn world_readable_master_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    file_keyring(dir.path());
    let p = dir.path().join("master.key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        Keyring::file(dir.path()),
        Err(VaultError::MasterKeyExposed { .. })
    ));
}

/// A backend that counts unwraps and may take its time over them.
#[derive(Debug)]
struct Counting {
    inner: FileBackend,
    unwraps: Arc<AtomicUsize>,
    slow: bool,
}

impl Counting {
    fn new(inner: FileBackend) -> (Counting, Arc<AtomicUsize>) {
        let unwraps = Arc::new(AtomicUsize::new(0));
        (
            Counting {
                inner,
                unwraps: unwraps.clone(),
                slow: false,
            },
            unwraps,
        )
    }

    fn slow(self) -> Self {
        Counting { slow: true, ..self }
    }
}

impl KeyBackend for Counting {
    fn kind(&self) -> &'static str {
        "counting"
    }
    fn probe(&self) -> Result<(), BackendError> {
        self.inner.probe()
    }
    fn prepare(&self, name: KeyName<'_>) -> Result<(), BackendError> {
        self.inner.prepare(name)
    }
    fn wrap(&self, name: KeyName<'_>, key: &SecretKey) -> Result<Vec<u8>, BackendError> {
        self.inner.wrap(name, key)
    }
    fn unwrap(&self, name: KeyName<'_>, wrapped: &[u8]) -> Result<SecretKey, BackendError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        if self.slow {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        self.inner.unwrap(name, wrapped)
    }
    fn retire(&self, name: KeyName<'_>) -> Result<(), BackendError> {
        self.inner.retire(name)
    }
    fn shred(&self, tenant: &str) -> Result<(), BackendError> {
        self.inner.shred(tenant)
    }
}
