//! Replicas: every copy gets the sealed bytes as stored, the spool record lives until every
//! copy has them, `ack = "replicated"` waits for them, and reads fall back to a replica
//! (even half-way through an object) without ever splicing two different plaintexts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quire_codecs::sealed::{self, Compression};
use quire_codecs::wire::PageEntry;
use quire_storage::faults::Faults;
use quire_storage::Store;
use tokio::sync::mpsc;

use crate::hash::sha256;
use crate::{keys, AckMode, Keyring, PageInput, Pipeline, PipelineConfig, PipelineError, Spool};

const CHUNK: u32 = 64 * 1024;

/// A pipeline for tenant `acme` over a memory primary and two memory replicas, the first of
/// them behind fault switches.
fn replicated(dir: &std::path::Path, ack: AckMode) -> (Pipeline, Faults) {
    let config = PipelineConfig {
        chunk_size: CHUNK,
        single_put_limit: 200_000,
        ack,
        ack_timeout: Duration::from_secs(1),
        ..PipelineConfig::default()
    };
    let vault = Arc::new(Keyring::file(&dir.join("vault")).unwrap());
    let spool = Spool::open(
        &dir.join("spool"),
        &dir.join("spool-keys"),
        crate::SpoolConfig::default(),
    )
    .unwrap();
    let (flaky, faults) = Store::memory().with_faults();
    let replicas = [("acme".to_string(), vec![flaky, Store::memory()])].into();
    let p = Pipeline::new(Store::memory(), vault, Arc::new(spool), config).with_replicas(replicas);
    p.spawn_delivery();
    (p, faults)
}

/// Incompressible bytes, so an object has one chunk per `CHUNK` of page.
fn noise(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    getrandom::fill(&mut v).unwrap();
    v
}

async fn push(p: &Pipeline, index: u32, data: &[u8]) -> Result<crate::Receipt, PipelineError> {
    let (tx, rx) = mpsc::channel(4);
    let entry = PageEntry {
        index,
        name: format!("p{index}"),
        size: data.len() as u64,
        sha256: sha256(data),
    };
    let parts: Vec<Bytes> = data.chunks(50_000).map(Bytes::copy_from_slice).collect();
    let feeder = tokio::spawn(async move {
        for part in parts {
            if tx.send(PageInput::Data(part)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(PageInput::End(None)).await;
    });
    let r = p.ingest_page("acme", "job1", entry, rx).await;
    feeder.await.unwrap();
    r
}

async fn read(p: &Pipeline, key: &str) -> Result<Vec<u8>, PipelineError> {
    let (v, read) = crate::read_plain(p, "acme", key).await;
    read.map(|(digest, len)| {
        assert_eq!(
            (digest, len),
            (sha256(&v), v.len() as u64),
            "digest of what was passed on"
        );
        v
    })
}

async fn drained(p: &Pipeline) {
    for _ in 0..200 {
        if p.spool.pending_under("tenants").eq(&0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the spool did not drain");
}

#[tokio::test]
async fn every_copy_gets_the_bytes_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = replicated(dir.path(), AckMode::Stored);
    let small = noise(30_000);
    let large = noise(700_000); // streamed through the spool
    for (i, data) in [&small, &large].into_iter().enumerate() {
        push(&p, i as u32, data).await.unwrap();
    }
    drained(&p).await;
    for i in 0..2 {
        let key = keys::page_key("acme", "job1", i);
        let primary = p.store.get(&key).await.unwrap();
        assert!(primary.starts_with(b"QRSO"), "sealed");
        for replica in p.replicas_for("acme") {
            assert_eq!(replica.get(&key).await.unwrap(), primary, "{key}");
        }
    }
    // Another tenant has no replicas: nothing of its goes there.
    assert!(p.replicas_for("other").is_empty());
    assert_eq!(p.copies_for("other").len(), 1);
}

#[tokio::test]
async fn a_read_falls_back_to_a_replica_even_half_way_through() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = replicated(dir.path(), AckMode::Replicated);
    let data = noise(1_500_000); // 23 chunks
    let key = push(&p, 0, &data).await.unwrap().object_key;
    drained(&p).await;

    // The primary loses the object: the replica serves it.
    let stored = p.store.get(&key).await.unwrap();
    p.store.delete(&key).await.unwrap();
    assert_eq!(read(&p, &key).await.unwrap(), data);

    // The primary's copy fails in its last chunk, after most of the page was passed on:
    // the replica goes on from there, and nothing is passed on twice.
    let mut spoiled = stored.to_vec();
    let last = spoiled.len() - 5;
    spoiled[last] ^= 0x01;
    p.store.put_new(&key, Bytes::from(spoiled)).await.unwrap();
    assert_eq!(read(&p, &key).await.unwrap(), data);

    // Every copy spoiled: the read fails as corrupt, never with wrong plaintext.
    for replica in p.replicas_for("acme") {
        let mut bad = replica.get(&key).await.unwrap().to_vec();
        bad[last] ^= 0x01;
        replica.delete(&key).await.unwrap();
        replica.put_new(&key, Bytes::from(bad)).await.unwrap();
    }
    let e = read(&p, &key).await.map(|v| v.len()).unwrap_err();
    assert!(matches!(e, PipelineError::Corrupt { .. }), "{e}");
}

#[tokio::test]
async fn copies_with_different_plaintext_are_never_spliced() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = replicated(dir.path(), AckMode::Replicated);
    let data = noise(1_500_000);
    let key = push(&p, 0, &data).await.unwrap().object_key;
    drained(&p).await;
    // A replica holds another page, sealed properly under the same key and name.
    let (kek_ref, kek) = p.current_key("acme").await.unwrap();
    let other = noise(1_500_000);
    let forged = sealed::seal_all(&kek, kek_ref, &key, Compression::None, CHUNK, &other);
    for replica in p.replicas_for("acme") {
        replica.delete(&key).await.unwrap();
        replica.put_new(&key, forged.clone()).await.unwrap();
    }
    let mut spoiled = p.store.get(&key).await.unwrap().to_vec();
    let last = spoiled.len() - 5;
    spoiled[last] ^= 0x01;
    p.store.delete(&key).await.unwrap();
    p.store.put_new(&key, Bytes::from(spoiled)).await.unwrap();
    let e = read(&p, &key).await.map(|v| v.len()).unwrap_err();
    assert!(e.to_string().contains("differs"), "{e}");
}

#[tokio::test]
async fn ack_replicated_waits_for_every_replica_and_stored_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (p, faults) = replicated(dir.path(), AckMode::Replicated);
    faults.set_down(true);
    let data = noise(30_000);
    let e = push(&p, 0, &data).await.unwrap_err();
    assert!(
        matches!(e, PipelineError::Store(_)) && e.to_string().contains("no confirmation"),
        "{e}"
    );
    let key = keys::page_key("acme", "job1", 0);
    assert!(p.store.exists(&key).await.unwrap(), "the primary has it");
    assert_eq!(p.spool.pending_under("tenants"), 1, "kept for the replica");
    faults.set_down(false);
    drained(&p).await;
    for replica in p.replicas_for("acme") {
        assert!(replica.exists(&key).await.unwrap());
    }
    assert!(push(&p, 0, &data).await.unwrap().already_stored);

    // With ack = "stored" the primary is enough, and replicas waiting never hold up the
    // primary writes: more pages than upload slots are all acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let (p, faults) = replicated(dir.path(), AckMode::Stored);
    faults.set_down(true);
    let slots = p.config.upload_concurrency as u32;
    for i in 0..slots + 4 {
        push(&p, i, &data).await.unwrap();
    }
    let waiting = p.spool.pending_under("tenants");
    assert_eq!(waiting as u32, slots + 4, "kept for the replica");
    assert_eq!(p.delivery.replica_pending(), u64::from(slots + 4));
    faults.set_down(false);
    drained(&p).await;
    assert_eq!(p.delivery.replica_pending(), 0);
    for i in 0..slots + 4 {
        let key = keys::page_key("acme", "job1", i);
        assert!(p.replicas_for("acme")[0].exists(&key).await.unwrap());
    }
}

#[tokio::test]
async fn a_rewrap_reaches_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = replicated(dir.path(), AckMode::Replicated);
    let key = push(&p, 0, &noise(30_000)).await.unwrap().object_key;
    drained(&p).await;
    assert_eq!(p.vault.rotate("acme").unwrap(), 2);
    assert_eq!(p.objects_under_key("acme", 1).await.unwrap(), 3);
    let r = p.rewrap_tenant("acme").await.unwrap();
    assert_eq!(r.rewrapped, 3);
    assert_eq!(p.objects_under_key("acme", 1).await.unwrap(), 0);
    for store in p.copies_for("acme") {
        let bytes = store.get(&key).await.unwrap();
        let h = sealed::Header::parse(&bytes).unwrap().unwrap();
        assert_eq!(h.kek.version, 2, "{}", store.name());
    }
}
