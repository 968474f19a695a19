use super::*;

#[tokio::test]
async fn crash_leftovers_of_one_key_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    store
        .put_new("t/j/p1", Bytes::from_static(b"kept"))
        .await
        .unwrap();
    let d = dir.path().join("t/j");
    for f in ["p1#17", "p1#3", "p1#x", "p10#1", "p2#1"] {
        std::fs::write(d.join(f), b"staged").unwrap();
    }
    assert_eq!(store.remove_crash_leftovers("t/j/p1").unwrap(), 2);
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["p1", "p1#x", "p10#1", "p2#1"]);
    assert_eq!(store.remove_crash_leftovers("t/none/p1").unwrap(), 0);
    assert_eq!(Store::memory().remove_crash_leftovers("t/j/p1").unwrap(), 0);
}

#[tokio::test]
async fn every_crash_leftover_under_a_prefix_is_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    for key in ["t/j/pages/000001", "t/j/manifest", "t/j2/pages/000001"] {
        store
            .put_new(key, Bytes::from_static(b"kept"))
            .await
            .unwrap();
    }
    for f in [
        "j/pages/000001#1",
        "j/pages/000002#12",
        "j/manifest#3",
        "j/pages/x#y",
        "j2/pages/000001#1",
    ] {
        std::fs::write(dir.path().join("t").join(f), b"staged").unwrap();
    }
    assert_eq!(store.remove_leftovers_under("t/j").unwrap(), 3);
    let root = format!("{}/", dir.path().display());
    let mut left: Vec<String> = walk(dir.path())
        .into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "t/j/manifest",
            "t/j/pages/000001",
            "t/j/pages/x#y",
            "t/j2/pages/000001",
            "t/j2/pages/000001#1"
        ]
    );
    assert_eq!(store.remove_leftovers_under("t/none").unwrap(), 0);
    assert_eq!(Store::memory().remove_leftovers_under("t/j").unwrap(), 0);
}

async fn exercise(store: Store) {
    store
        .put_new("t/a/1", Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert!(matches!(
        store.put_new("t/a/1", Bytes::from_static(b"two")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        store.get("t/a/1").await.unwrap(),
        Bytes::from_static(b"one")
    );

    let mut up = store.begin_upload("t/a/big").await.unwrap();
    let part = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
    for _ in 0..4 {
        up.write(part.clone()).await.unwrap();
    }
    assert!(
        !store.exists("t/a/big").await.unwrap(),
        "visible before finish"
    );
    up.finish().await.unwrap();
    let got: Vec<Bytes> = store
        .get_stream("t/a/big")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.iter().map(|b| b.len()).sum::<usize>(), 12 * 1024 * 1024);
    assert!(matches!(
        store.begin_upload("t/a/big").await,
        Err(StoreError::AlreadyExists(_))
    ));

    let mut up = store.begin_upload("t/a/aborted").await.unwrap();
    up.write(part.clone()).await.unwrap();
    up.abort().await.unwrap();
    assert!(!store.exists("t/a/aborted").await.unwrap());

    store
        .put_new("t/b/1", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list("t/a")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, vec!["t/a/1".to_string(), "t/a/big".to_string()]);
    store.delete("t/a/1").await.unwrap();
    store.delete("t/a/1").await.unwrap();
    assert!(matches!(
        store.get("t/a/1").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn memory_store_behaves() {
    exercise(Store::memory()).await;
}

#[tokio::test]
async fn local_store_behaves_and_leaves_no_staging_files() {
    let dir = tempfile::tempdir().unwrap();
    exercise(Store::local(dir.path()).unwrap()).await;
    let mut names = Vec::new();
    for e in walk(dir.path()) {
        names.push(e);
    }
    assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
}

fn walk(p: &FsPath) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// A local store whose syncs fail (the disk reports an I/O error).
fn failing_local(root: &FsPath) -> Store {
    let fs = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).unwrap());
    Store {
        inner: fs.clone(),
        name: "local:failing".into(),
        local_root: Some(root.to_path_buf()),
        syncer: Some(Arc::new(
            sync::Syncer::with(|| Err(std::io::Error::other("Input/output error"))).unwrap(),
        )),
        direct: Some((fs, Arc::new(direct::DirectWriter::new()))),
    }
}

/// A write whose sync failed was never stored: it is an error the caller may retry, and the
/// object is gone, so the retry writes it again instead of finding and trusting it.
#[tokio::test]
async fn a_write_that_could_not_be_synced_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = failing_local(dir.path());
    let e = store
        .put_new("t/j/small", Bytes::from_static(b"page"))
        .await
        .unwrap_err();
    assert!(
        e.is_retryable() && e.to_string().contains("Input/output error"),
        "{e}"
    );
    assert!(!store.exists("t/j/small").await.unwrap());
    let mut up = store.begin_upload("t/j/large").await.unwrap();
    up.write(Bytes::from(vec![1u8; 3 * PART_SIZE / 2]))
        .await
        .unwrap();
    let e = up.finish().await.unwrap_err();
    assert!(e.to_string().contains("could not be made durable"), "{e}");
    assert!(!store.exists("t/j/large").await.unwrap());
}

/// Many writes at once on a real local store: each is readable when its call returns, and
/// they share syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_local_writes_are_each_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    assert!(store.syncer.is_some(), "Linux stores sync in batches");
    let writes: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("t/j{}/p{i}", i % 5);
                store
                    .put_new(&key, Bytes::from(vec![i as u8; 10_000]))
                    .await
                    .unwrap();
                assert_eq!(store.get(&key).await.unwrap(), vec![i as u8; 10_000]);
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    assert_eq!(store.list("t").await.unwrap().len(), 50);
}

/// A local store asked to sync each write does so itself (object_store's fsync of the file
/// and its directory), without the batching thread.
#[tokio::test]
async fn a_local_store_can_sync_each_write_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local_with(dir.path(), LocalSync::Each, LocalWrites::Direct).unwrap();
    assert!(store.syncer.is_none());
    assert!(
        store.direct.is_none(),
        "direct writes need the batched sync"
    );
    store
        .put_new("t/j/p", Bytes::from_static(b"page"))
        .await
        .unwrap();
    assert_eq!(
        store.get("t/j/p").await.unwrap(),
        Bytes::from_static(b"page")
    );
}

/// A directory on the checkout's filesystem (`/tmp` may be a tmpfs, which older kernels do not
/// let write past the cache).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(".store-test")
        .tempdir_in(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
}

/// A local store writes new objects past the page cache unless told to use it; either way
/// each object reads back whole, and a second write of the same key is refused.
#[tokio::test]
async fn a_local_store_writes_past_the_cache_unless_told_otherwise() {
    let dir = scratch();
    for writes in [LocalWrites::Direct, LocalWrites::Cached] {
        let root = dir.path().join(format!("{writes:?}"));
        let store = Store::local_with(&root, LocalSync::Batched, writes).unwrap();
        let page: Bytes = (0..300_001u32).map(|i| (i % 253) as u8).collect();
        store.put_new("t/j/p", page.clone()).await.unwrap();
        assert_eq!(store.get("t/j/p").await.unwrap(), page);
        let again = store.put_new("t/j/p", Bytes::from_static(b"x")).await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists(_))),
            "{again:?}"
        );
        assert_eq!(store.get("t/j/p").await.unwrap(), page);
        let direct_bytes = store.direct.as_ref().map_or(0, |(_, w)| w.direct_bytes());
        match writes {
            LocalWrites::Direct => assert_eq!(direct_bytes, 300_001 / 4096 * 4096),
            LocalWrites::Cached => assert_eq!(direct_bytes, 0),
        }
        assert!(walk(&root).iter().all(|n| !n.contains('#')));
    }
}

/// A local store on a full filesystem refuses the write as retryable (the operator frees
/// space, the scanner sends again), keeps every object it stored before and leaves no
/// staging file behind.
#[tokio::test]
async fn a_full_disk_refuses_the_write_and_keeps_what_was_stored() {
    let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    if !is_root {
        eprintln!("skipped: mounting a small file system needs root (CI runs as root)");
        return;
    }
    let dir = scratch();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a 1 MiB tmpfs failed");
    struct Unmount<'a>(&'a FsPath);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .status();
        }
    }
    let _unmount = Unmount(dir.path());
    let store = Store::local(dir.path()).unwrap();
    let page = |i: u8| Bytes::from(vec![i; 300_000]);
    let mut stored = 0u8;
    let e = loop {
        match store.put_new(&format!("t/j/p{stored}"), page(stored)).await {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 10, "a 1 MiB filesystem took 3 MB");
    };
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("No space left"), "{e}");
    assert!(stored >= 2, "only {stored} objects fitted");
    for i in 0..stored {
        assert_eq!(store.get(&format!("t/j/p{i}")).await.unwrap(), page(i));
    }
    assert!(!store.exists(&format!("t/j/p{stored}")).await.unwrap());
    // A streamed page fails as retryable too, at a write or at the end.
    let mut up = store.begin_upload("t/j/large").await.unwrap();
    let mut failed = None;
    for _ in 0..8 {
        if let Err(e) = up.write(page(9)).await {
            failed = Some(e);
            break;
        }
    }
    let e = match failed {
        Some(e) => {
            up.abort().await.unwrap();
            e
        }
        None => up.finish().await.unwrap_err(),
    };
    assert!(
        e.is_retryable() && e.to_string().contains("No space left"),
        "{e}"
    );
    assert!(!store.exists("t/j/large").await.unwrap());
    assert!(walk(dir.path()).iter().all(|n| !n.contains('#')));
}
