use super::*;

fn config(durable: bool) -> SpoolConfig {
    SpoolConfig {
        capacity: 10 * 1024 * 1024,
        busy_wait: Duration::from_millis(200),
        durable,
        ..SpoolConfig::default()
    }
}

fn open(dir: &Path) -> Arc<Spool> {
    Arc::new(Spool::open(&dir.join("spool"), &dir.join("keys"), config(true)).unwrap())
}

async fn put(spool: &Arc<Spool>, key: &str, data: &[u8]) -> Arc<Record> {
    let r = spool
        .reserve("acme", reservation_for(data.len() as u64))
        .await
        .unwrap();
    let mut w = spool.writer(r, key, [7; 32], 1).unwrap();
    for piece in data.chunks(100_000) {
        w.write(piece).unwrap();
    }
    w.commit().unwrap()
}

fn read_back(spool: &Spool, record: &Record) -> Result<Vec<u8>, SpoolError> {
    let (tx, mut rx) = mpsc::channel(1024);
    // `read_body` blocks: give it a thread of its own, off the test's runtime.
    std::thread::scope(|s| s.spawn(|| spool.read_body(record, &tx)).join().unwrap())?;
    drop(tx);
    let mut out = Vec::new();
    while let Ok(b) = rx.try_recv() {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn committed_records_survive_a_crash_and_are_queued_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(700_000);
    {
        let spool = open(dir.path());
        put(&spool, "tenants/acme/jobs/j/pages/000000", &data).await;
        // The process dies here: nothing is delivered.
    }
    let spool = open(dir.path());
    let mut queue = spool.take_queue().unwrap();
    let record = queue.try_recv().unwrap();
    assert_eq!(record.meta.object_key, "tenants/acme/jobs/j/pages/000000");
    assert_eq!(record.meta.sealed_size, data.len() as u64);
    assert_eq!(read_back(&spool, &record).unwrap(), data);
    assert!(spool.pending(&record.meta.object_key).is_some());
    assert!(spool.delivered(&record, 1).unwrap());
    assert!(!spool.delivered(&record, 1).unwrap(), "delivered once");
    assert!(files(spool.dir()).is_empty());
    assert!(
        files(spool.key_dir()).is_empty(),
        "the epoch key is destroyed"
    );
    assert_eq!(spool.used(), 0);
}

#[tokio::test]
async fn an_interrupted_write_and_keys_no_record_needs_are_erased_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(dir.path());
        let r = spool.reserve("acme", 1000).await.unwrap();
        let mut w = spool.writer(r, "k", [0; 32], 1).unwrap();
        w.write(&sample(300_000)).unwrap();
        std::mem::forget(w); // a crash: no commit, no clean-up
        assert_eq!(files(spool.dir()).len(), 1);
        assert_eq!(files(spool.key_dir()).len(), 1);
    }
    let spool = open(dir.path());
    assert!(spool.is_empty());
    assert!(files(spool.dir()).is_empty());
    assert!(files(spool.key_dir()).is_empty());
}

#[tokio::test]
async fn records_whose_key_is_gone_cannot_be_read_and_are_erased() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(dir.path());
        put(&spool, "k", &sample(1000)).await;
    }
    for f in files(&dir.path().join("keys")) {
        fs::remove_file(f).unwrap(); // e.g. a reboot emptied /dev/shm
    }
    let spool = open(dir.path());
    assert!(spool.is_empty());
    assert!(files(spool.dir()).is_empty());
}

#[tokio::test]
async fn a_dropped_writer_gives_back_its_space_and_its_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let r = spool.reserve("acme", 5000).await.unwrap();
    let mut w = spool.writer(r, "k", [0; 32], 1).unwrap();
    w.write(b"partial").unwrap();
    drop(w);
    assert_eq!(spool.used(), 0);
    assert!(files(spool.dir()).is_empty());
    // The epoch is open with nothing outstanding; the next delivery-less close erases it.
    let rec = put(&spool, "k2", b"x").await;
    assert!(spool.delivered(&rec, 1).unwrap());
    assert!(files(spool.key_dir()).is_empty());
}

#[tokio::test]
async fn a_full_spool_pushes_back_then_admits_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let big = spool.reserve("acme", 9 * 1024 * 1024).await.unwrap();
    let err = spool.reserve("beta", 2 * 1024 * 1024).await.unwrap_err();
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(err.to_string().contains("spool is full"), "{err}");
    let waiter = {
        let spool = spool.clone();
        tokio::spawn(async move { spool.reserve("beta", 2 * 1024 * 1024).await.map(drop) })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(big);
    waiter.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_key_outlives_every_record_of_its_epoch_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let a = put(&spool, "a", b"first").await;
    let b = put(&spool, "b", b"second").await;
    assert_eq!(files(spool.key_dir()).len(), 1, "one epoch, one key");
    assert!(spool.delivered(&b, 1).unwrap()); // out of order
    assert_eq!(files(spool.key_dir()).len(), 1, "a still needs the key");
    assert_eq!(read_back(&spool, &a).unwrap(), b"first");
    assert!(spool.delivered(&a, 1).unwrap());
    assert!(files(spool.key_dir()).is_empty());
    assert!(files(spool.dir()).is_empty());
}

/// The crypto-erase property: what the disk may keep after delivery is ciphertext under a
/// key that exists nowhere any more.
#[tokio::test]
async fn after_delivery_neither_plaintext_nor_a_usable_key_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let secret = b"CONFIDENTIAL-INVOICE-4711 ".repeat(4000);
    let record = put(&spool, "tenants/acme/jobs/j/pages/000000", &secret).await;
    // What someone imaging the disk now could take: the raw record files and the key.
    let raw: Vec<(PathBuf, Vec<u8>)> = files(spool.dir())
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let key_files = files(spool.key_dir());
    assert_eq!(key_files.len(), 1);
    let key: [u8; 32] = fs::read(&key_files[0]).unwrap().try_into().unwrap();
    for (path, bytes) in &raw {
        assert!(
            !bytes.windows(26).any(|w| w == &secret[..26]),
            "{} holds the page in the clear",
            path.display()
        );
    }
    assert_eq!(
        read_back(&spool, &record).unwrap(),
        secret,
        "the key opens it"
    );
    assert!(spool.delivered(&record, 1).unwrap());

    // After delivery: no key file, and no 32-byte window of anything left under the spool
    // or key directory opens the record's meta as it was on disk.
    assert!(files(spool.key_dir()).is_empty());
    let (meta_path, meta_bytes) = raw
        .iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "meta"))
        .unwrap();
    let stem = meta_path.file_stem().unwrap().to_str().unwrap();
    let object_key = format!("spool/{stem}/meta");
    let opens = |candidate: [u8; 32]| {
        sealed::open_all(meta_bytes, &object_key, |_| {
            Some(SecretKey::from_bytes(candidate))
        })
        .is_ok()
    };
    assert!(opens(key), "sanity: the captured key opened the record");
    let mut left = Vec::new();
    for d in [spool.dir(), spool.key_dir(), dir.path()] {
        for p in files(d) {
            if p.is_file() {
                left.extend(fs::read(p).unwrap());
            }
        }
    }
    assert!(
        !left.windows(32).any(|w| w == key),
        "key bytes left on disk"
    );
    for w in left.windows(32) {
        assert!(
            !opens(w.try_into().unwrap()),
            "a usable key was left on disk"
        );
    }
}

#[test]
fn a_key_directory_not_of_the_servers_own_is_refused() {
    use super::keydir::{ownership_problem, KeyDir};
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // A symbolic link, as another user could plant at a predictable name.
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = KeyDir::open(&link, false).unwrap_err().to_string();
    assert!(e.contains("symbolic link"), "{e}");
    // Open to others.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = KeyDir::open(&open, false).unwrap_err().to_string();
    assert!(e.contains("chmod 700"), "{e}");
    // Its own, closed: fine.
    assert!(KeyDir::open(&real, false).is_ok());
    // Another user's: the rule itself (changing a directory's owner needs root).
    let why = ownership_problem(65534, 1000, 0o700).unwrap();
    assert!(
        why.contains("uid 65534") && why.contains("RuntimeDirectory"),
        "{why}"
    );
    assert_eq!(ownership_problem(1000, 1000, 0o700), None);
}

#[test]
fn spool_keys_default_to_the_runtime_directory_the_service_manager_gives() {
    use super::keydir::default_key_dir_from;
    let runtime = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let r = runtime.path().to_path_buf();
    let env = |var: &str| (var == "RUNTIME_DIRECTORY").then(|| r.clone().into_os_string());
    let dir = default_key_dir_from(data.path(), env);
    assert!(dir.starts_with(runtime.path()), "{}", dir.display());
    // Another data directory gets another key directory.
    let other = tempfile::tempdir().unwrap();
    assert_ne!(dir, default_key_dir_from(other.path(), env));
    // Without it (and no XDG_RUNTIME_DIR), /dev/shm or beside the data as before.
    let none = default_key_dir_from(data.path(), |_| None);
    assert!(!none.starts_with(runtime.path()));
}
