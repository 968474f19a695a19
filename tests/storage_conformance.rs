//! One conformance suite that every store backend passes: local, in-memory, and real S3 and
//! Azure servers (moto and Azurite, installed and started on loopback by scripts/test.sh,
//! which exports their endpoints).

use std::sync::Arc;

use crate::common::required_env;
use bytes::Bytes;
use futures::TryStreamExt;
use quire_storage::{AzureOptions, S3Options, Store, StoreError, PART_SIZE};

use crate::common;

fn unique(prefix: &str) -> String {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).unwrap();
    format!("{prefix}-{}", hex::encode(r))
}

/// Runs the suite under a fresh prefix, which it returns.
async fn conformance(store: Store) -> String {
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

    outages(&store, &root, &big).await;
    root
}

/// Outage behaviour, through the fault-injecting decorator over this same backend: every
/// operation fails as retryable while the store is down, nothing of a failed write is
/// visible, and the retry succeeds.
async fn outages(store: &Store, root: &str, big: &[u8]) {
    let k = |s: &str| format!("{root}/{s}");
    let (faulty, faults) = store.with_faults();
    faults.set_down(true);
    for e in [
        faulty
            .put_new(&k("c/1"), Bytes::from_static(b"x"))
            .await
            .unwrap_err(),
        faulty.get(&k("race")).await.unwrap_err(),
        faulty.list(root).await.unwrap_err(),
        faulty.exists(&k("c/1")).await.unwrap_err(),
        faulty.begin_upload(&k("c/big")).await.err().unwrap(),
    ] {
        assert!(e.is_retryable(), "an outage must read as retryable: {e}");
    }
    assert!(faults.refused() >= 5);
    faults.set_down(false);
    assert!(!store.exists(&k("c/1")).await.unwrap());
    faulty
        .put_new(&k("c/1"), Bytes::from_static(b"x"))
        .await
        .unwrap();

    // A multipart upload whose second part fails is aborted and leaves nothing visible.
    faults.fail_parts_after(1);
    let mut up = faulty.begin_upload(&k("c/big")).await.unwrap();
    let mut failure = None;
    for piece in big.chunks(PART_SIZE) {
        if let Err(e) = up.write(Bytes::copy_from_slice(piece)).await {
            failure = Some(e);
            break;
        }
    }
    let failure = match failure {
        Some(e) => {
            up.abort().await.unwrap();
            e
        }
        None => up.finish().await.unwrap_err(),
    };
    assert!(failure.is_retryable(), "{failure}");
    faults.fail_parts_after(0);
    assert!(!store.exists(&k("c/big")).await.unwrap());
    store.delete(&k("c/1")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Store::local(dir.path()).unwrap()).await;
    // No staging file of an aborted or failed upload is left in the directory.
    let left: Vec<_> = common::walk(dir.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance(Store::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms() {
    let (endpoint, bucket) = (
        required_env("QUIRE_TEST_S3_ENDPOINT"),
        required_env("QUIRE_TEST_S3_BUCKET"),
    );
    let store = Store::s3(&S3Options {
        endpoint: endpoint.clone(),
        region: "eu-central-1".into(),
        bucket: bucket.clone(),
        access_key_id: "quire-test".into(),
        secret_access_key: "quire-test-secret".into(),
    })
    .unwrap();
    let root = conformance(store).await;
    // The aborted and the failed upload left no multipart upload behind (boto3 asks).
    let open = common::third_party(
        r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="quire-test",
                  aws_secret_access_key="quire-test-secret", region_name="eu-central-1")
r = s3.list_multipart_uploads(Bucket=sys.argv[2], Prefix=sys.argv[3])
print(len(r.get("Uploads", [])))
"#,
        &[&endpoint, &bucket, &root],
    );
    assert_eq!(open.trim(), "0", "orphaned multipart uploads under {root}");
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
