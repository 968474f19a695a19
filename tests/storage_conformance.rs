//! One conformance suite that every store backend passes: local, in-memory, and real S3 and
//! Azure servers (moto and Azurite, installed and started on loopback by scripts/test.sh,
//! which exports their endpoints).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use quire_storage::{AzureOptions, S3Options, Store, StoreError, PART_SIZE};

fn unique(prefix: &str) -> String {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).unwrap();
    format!("{prefix}-{}", hex::encode(r))
}

async fn conformance(store: Store) {
    let root = unique("conformance");
    let k = |s: &str| format!("{root}/{s}");

    // Conditional create: the first write wins, the second is refused, nothing is overwritten.
    store
        .put_new(&k("a/1"), Bytes::from_static(b"one"))
        .await
        .unwrap();
    let again = store.put_new(&k("a/1"), Bytes::from_static(b"two")).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(_))),
        "{again:?}"
    );
    assert_eq!(
        store.get(&k("a/1")).await.unwrap(),
        Bytes::from_static(b"one")
    );

    // Sixteen writers race for one key: exactly one wins.
    let store_arc = Arc::new(store.clone());
    let racers: Vec<_> = (0..16u8)
        .map(|i| {
            let s = store_arc.clone();
            let key = k("race");
            tokio::spawn(async move { s.put_new(&key, Bytes::from(vec![i; 100])).await.is_ok() })
        })
        .collect();
    let mut winners = 0;
    for r in racers {
        winners += r.await.unwrap() as usize;
    }
    assert_eq!(
        winners, 1,
        "conditional create let {winners} writers through"
    );

    // A multipart upload larger than one part; invisible until finished.
    let big: Vec<u8> = (0..(PART_SIZE * 2 + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    let mut up = store.begin_upload(&k("a/big")).await.unwrap();
    for piece in big.chunks(3 * 1024 * 1024) {
        up.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert!(
        !store.exists(&k("a/big")).await.unwrap(),
        "visible before finish"
    );
    up.finish().await.unwrap();
    let got: Vec<Bytes> = store
        .get_stream(&k("a/big"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(got.concat() == big, "multipart object differs");
    assert_eq!(
        store.size(&k("a/big")).await.unwrap(),
        Some(big.len() as u64)
    );
    assert_eq!(
        store.get_range(&k("a/big"), 1000..1010).await.unwrap(),
        Bytes::copy_from_slice(&big[1000..1010])
    );
    assert!(matches!(
        store.begin_upload(&k("a/big")).await,
        Err(StoreError::AlreadyExists(_))
    ));

    // An aborted upload leaves nothing behind.
    let mut up = store.begin_upload(&k("a/aborted")).await.unwrap();
    up.write(Bytes::from(vec![1u8; PART_SIZE + 10]))
        .await
        .unwrap();
    up.abort().await.unwrap();
    assert!(!store.exists(&k("a/aborted")).await.unwrap());

    // Listing is by prefix, sorted; other prefixes do not leak in.
    store
        .put_new(&k("b/1"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list(&k("a"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, vec![k("a/1"), k("a/big")]);

    // Delete is idempotent; reads of a deleted object are NotFound.
    store.delete(&k("a/1")).await.unwrap();
    store.delete(&k("a/1")).await.unwrap();
    assert!(matches!(
        store.get(&k("a/1")).await,
        Err(StoreError::NotFound(_))
    ));
    for key in [k("a/big"), k("b/1"), k("race")] {
        store.delete(&key).await.unwrap();
    }
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test.sh, which installs and starts the S3 and Azure test servers")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Store::local(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance(Store::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms() {
    let store = Store::s3(&S3Options {
        endpoint: required_env("QUIRE_TEST_S3_ENDPOINT"),
        region: "eu-central-1".into(),
        bucket: required_env("QUIRE_TEST_S3_BUCKET"),
        access_key_id: "quire-test".into(),
        secret_access_key: "quire-test-secret".into(),
    })
    .unwrap();
    conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_store_conforms() {
    let store = Store::azure(&AzureOptions {
        endpoint: required_env("QUIRE_TEST_AZURE_ENDPOINT"),
        account: "devstoreaccount1".into(),
        // Azurite's published development key, not a secret.
        access_key: "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
        container: required_env("QUIRE_TEST_AZURE_CONTAINER"),
    })
    .unwrap();
    conformance(store).await;
}
