use super::*;
use crate::hash::sha256;
use crate::PipelineConfig;
use quire_codecs::wire::ErrorCode;
use quire_storage::Store;

fn pipeline(dir: &std::path::Path) -> Pipeline {
    let config = PipelineConfig {
        single_put_limit: 100_000,
        ..PipelineConfig::default()
    };
    crate::test_pipeline(dir, config)
}

fn entry(index: u32, data: &[u8]) -> PageEntry {
    PageEntry {
        index,
        name: format!("p{index}"),
        size: data.len() as u64,
        sha256: sha256(data),
    }
}

async fn push(p: &Pipeline, e: PageEntry, parts: Vec<PageInput>) -> Result<Receipt, PipelineError> {
    push_after(Prior::Unknown, p, e, parts).await
}

async fn push_after(
    prior: Prior,
    p: &Pipeline,
    e: PageEntry,
    parts: Vec<PageInput>,
) -> Result<Receipt, PipelineError> {
    push_declared((prior, DigestAt::Start), p, e, parts).await
}

async fn push_declared(
    declared: (Prior, DigestAt),
    p: &Pipeline,
    e: PageEntry,
    parts: Vec<PageInput>,
) -> Result<Receipt, PipelineError> {
    let (tx, rx) = mpsc::channel(4);
    let feeder = tokio::spawn(async move {
        for part in parts {
            if tx.send(part).await.is_err() {
                break;
            }
        }
    });
    let r = p.ingest_page_after(declared, "acme", "job1", e, rx).await;
    feeder.await.unwrap();
    r
}

fn split(data: &[u8], n: usize) -> Vec<PageInput> {
    let mut v: Vec<PageInput> = data
        .chunks(n)
        .map(|c| PageInput::Data(Bytes::copy_from_slice(c)))
        .collect();
    v.push(PageInput::End(None));
    v
}

async fn read_back(p: &Pipeline, key: &str) -> Vec<u8> {
    let (v, read) = crate::read_plain(p, "acme", key).await;
    read.unwrap();
    v
}

#[tokio::test]
async fn pages_of_every_size_round_trip_compressed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let text = b"Rechnung 2026 ".repeat(100_000); // compresses, multipart
    let mut noise = vec![0u8; 700_000];
    getrandom::fill(&mut noise).unwrap();
    for (i, data) in [vec![], vec![1u8], text, noise].into_iter().enumerate() {
        let r = push(&p, entry(i as u32, &data), split(&data, 10_000))
            .await
            .unwrap();
        assert!(!r.already_stored);
        assert_eq!(read_back(&p, &r.object_key).await, data);
    }
}

#[tokio::test]
async fn bad_pages_leave_nothing_behind_when_streamed() {
    let dir = tempfile::tempdir().unwrap();
    bad_pages_leave_nothing_behind(pipeline(dir.path())).await; // 300 kB > single_put_limit
}

#[tokio::test]
async fn bad_pages_leave_nothing_behind_when_gathered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::test_pipeline(dir.path(), PipelineConfig::default()); // 300 kB fits
    bad_pages_leave_nothing_behind(p).await;
}

async fn bad_pages_leave_nothing_behind(p: Pipeline) {
    let data = vec![3u8; 300_000];
    let mut wrong = entry(0, &data);
    wrong.sha256[0] ^= 1;
    let e = push(&p, wrong, split(&data, 4096)).await.unwrap_err();
    assert!(matches!(e, PipelineError::IntegrityMismatch { .. }), "{e}");
    let short = push(&p, entry(1, &data), split(&data[..1000], 100))
        .await
        .unwrap_err();
    assert!(matches!(short, PipelineError::Truncated { .. }), "{short}");
    let mut cut = split(&data, 4096);
    cut.truncate(5);
    let gone = push(&p, entry(2, &data), cut).await.unwrap_err();
    assert!(matches!(gone, PipelineError::Abandoned), "{gone}");
    let mut long = data.clone();
    long.push(0);
    let over = push(&p, entry(3, &data), split(&long, 4096))
        .await
        .unwrap_err();
    assert!(matches!(over, PipelineError::Oversized { .. }), "{over}");
    assert!(p.store.list("tenants").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_retry_is_verified_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let data = b"page".repeat(1000);
    let first = push(&p, entry(0, &data), split(&data, 100)).await.unwrap();
    let again = push(&p, entry(0, &data), split(&data, 100)).await.unwrap();
    assert!(again.already_stored);
    assert_eq!(first.object_key, again.object_key);
    let other = b"different".repeat(10);
    let e = push(&p, entry(0, &other), split(&other, 100))
        .await
        .unwrap_err();
    assert!(matches!(e, PipelineError::Conflict { index: 0 }));
    assert_eq!(p.store.list("tenants").await.unwrap().len(), 1);
}

/// A crash between the store's write and the caller's record leaves an object the caller's
/// metadata does not know: a page retried as `NotRecorded` must still be found, small
/// (conditional write) or streamed (checked first), and never stored twice or replaced.
#[tokio::test]
async fn an_object_the_caller_never_recorded_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let small = b"page".repeat(1000);
    let mut streamed = vec![0u8; 300_000]; // over single_put_limit
    getrandom::fill(&mut streamed).unwrap();
    for (index, data) in [small, streamed].into_iter().enumerate() {
        let e = entry(index as u32, &data);
        let first = push_after(Prior::NotRecorded, &p, e.clone(), split(&data, 10_000))
            .await
            .unwrap();
        assert!(!first.already_stored);
        let again = push_after(Prior::NotRecorded, &p, e, split(&data, 10_000))
            .await
            .unwrap();
        assert!(again.already_stored, "page {index}");
        let mut other = data.clone();
        other[0] ^= 1;
        let e = push_after(
            Prior::NotRecorded,
            &p,
            entry(index as u32, &other),
            split(&other, 10_000),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, PipelineError::Conflict { .. }),
            "page {index}: {e}"
        );
        assert_eq!(read_back(&p, &first.object_key).await, data);
    }
    assert_eq!(p.store.list("tenants").await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_store_outage_spools_the_page_and_delivery_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = Store::memory().with_faults();
    let vault = Arc::new(crate::Keyring::file(&dir.path().join("vault")).unwrap());
    let spool = crate::Spool::open(
        &dir.path().join("spool"),
        &dir.path().join("keys"),
        crate::SpoolConfig::default(),
    )
    .unwrap();
    let config = PipelineConfig {
        ack_timeout: std::time::Duration::from_millis(300),
        ..PipelineConfig::default()
    };
    let p = Pipeline::new(store.clone(), vault, Arc::new(spool), config);
    p.spawn_delivery();
    let data = b"scanned page ".repeat(20_000);

    // Down: the direct write fails, the page goes to the spool, and the scanner is told
    // to retry (not acknowledged), while delivery keeps trying.
    faults.set_down(true);
    let e = push(&p, entry(0, &data), split(&data, 8192))
        .await
        .unwrap_err();
    assert!(matches!(e, PipelineError::Store(_)), "{e}");
    assert_eq!(e.code(), ErrorCode::StoreUnavailable);
    assert_eq!(p.spool.len(), 1, "the page waits in the spool");

    // Back: delivery stores it, the spool empties, and the scanner's retry is answered
    // from the store without storing anything twice.
    faults.set_down(false);
    for _ in 0..200 {
        if p.spool.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(p.spool.is_empty(), "spool did not drain");
    let again = push(&p, entry(0, &data), split(&data, 8192)).await.unwrap();
    assert!(again.already_stored);
    assert_eq!(read_back(&p, &again.object_key).await, data);
    assert_eq!(store.list("tenants").await.unwrap().len(), 1);
    assert!(faults.refused() > 1, "delivery retried");
}

/// Committing a job again (a lost answer, a crash before the commit was recorded, two
/// nodes at once) signs it at another time: the same pages are success and keep the stored
/// signature; different pages are a conflict.
#[tokio::test]
async fn a_manifest_signed_again_keeps_the_first_signature() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let pages = vec![entry(0, b"page zero"), entry(1, b"page one")];
    let signer = quire_codecs::signed::ManifestSigner::derive(&[3; 32], 1);
    let signed_at = |ms| quire_codecs::manifest::Manifest {
        job_id: "j".into(),
        pages: pages.clone(),
        seal: Some(signer.sign("acme", "j", &pages, ms)),
    };
    p.write_manifest("acme", &signed_at(1_000)).await.unwrap();
    p.write_manifest("acme", &signed_at(2_000)).await.unwrap();
    let stored = p.read_manifest("acme", "j").await.unwrap();
    assert_eq!(stored, signed_at(1_000));
    let mut other = signed_at(3_000);
    other.pages.pop();
    assert!(matches!(
        p.write_manifest("acme", &other).await,
        Err(PipelineError::Conflict { .. })
    ));
}

/// The page's bytes, then its SHA-256 (`PagePutDigestAfter`).
fn split_digest_after(data: &[u8], n: usize) -> Vec<PageInput> {
    let mut v = split(data, n);
    v.pop();
    v.push(PageInput::End(Some(sha256(data))));
    v
}

async fn push_digest_after(
    p: &Pipeline,
    index: u32,
    parts: Vec<PageInput>,
    size: usize,
) -> Result<Receipt, PipelineError> {
    let e = PageEntry {
        index,
        name: format!("p{index}"),
        size: size as u64,
        sha256: [0; 32], // not read: the digest comes after the bytes
    };
    push_declared((Prior::Unknown, DigestAt::End), p, e, parts).await
}

#[tokio::test]
async fn a_digest_after_the_bytes_is_checked_like_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let streamed = pipeline(&dir.path().join("streamed")); // 300 kB > single_put_limit
    let whole = crate::test_pipeline(&dir.path().join("whole"), PipelineConfig::default());
    let mut data = vec![0u8; 300_000];
    getrandom::fill(&mut data).unwrap();
    for p in [streamed, whole] {
        let r = push_digest_after(&p, 0, split_digest_after(&data, 4096), data.len())
            .await
            .unwrap();
        assert!(!r.already_stored);
        assert_eq!(
            r.entry.sha256,
            sha256(&data),
            "acknowledged with its digest"
        );
        assert_eq!(read_back(&p, &r.object_key).await, data);

        // A retry is received whole, hashed, and found stored; other bytes at that index
        // are a conflict.
        let again = push_digest_after(&p, 0, split_digest_after(&data, 4096), data.len())
            .await
            .unwrap();
        assert!(again.already_stored);
        let other = vec![7u8; data.len()];
        let e = push_digest_after(&p, 0, split_digest_after(&other, 4096), other.len())
            .await
            .unwrap_err();
        assert!(matches!(e, PipelineError::Conflict { index: 0 }), "{e}");

        // Bytes that do not hash to the digest after them are refused, here and for a
        // page already stored; so is a page that ends without the promised digest.
        let mut wrong = split_digest_after(&data, 4096);
        *wrong.last_mut().unwrap() = PageInput::End(Some(sha256(b"another page")));
        let e = push_digest_after(&p, 1, wrong, data.len())
            .await
            .unwrap_err();
        assert!(matches!(e, PipelineError::IntegrityMismatch { .. }), "{e}");
        let mut wrong_again = split_digest_after(&data, 4096);
        *wrong_again.last_mut().unwrap() = PageInput::End(Some(sha256(b"another page")));
        let e = push_digest_after(&p, 0, wrong_again, data.len())
            .await
            .unwrap_err();
        assert!(matches!(e, PipelineError::IntegrityMismatch { .. }), "{e}");
        let e = push_digest_after(&p, 2, split(&data, 4096), data.len())
            .await
            .unwrap_err();
        assert!(matches!(e, PipelineError::Internal(_)), "{e}");
        assert_eq!(p.store.list("tenants").await.unwrap().len(), 1);
    }
}

/// A spooled page whose digest came after its bytes carries that digest in its spool
/// record, which a retry (and the store's record of the page) is compared with.
#[tokio::test]
async fn a_spool_record_names_a_digest_declared_after_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(quire_vault::Keyring::file(&dir.path().join("vault")).unwrap());
    let spool = spool::Spool::open(
        &dir.path().join("spool"),
        &dir.path().join("spool-keys"),
        spool::SpoolConfig::default(),
    )
    .unwrap();
    let config = PipelineConfig {
        ack: AckMode::Spooled,
        ..PipelineConfig::default()
    };
    // No delivery: the record stays in the spool.
    let p = Pipeline::new(Store::memory(), vault, Arc::new(spool), config);
    let data = b"Lieferschein ".repeat(30_000);
    let r = push_digest_after(&p, 0, split_digest_after(&data, 8192), data.len())
        .await
        .unwrap();
    let record = p.spool.pending(&r.object_key).expect("spooled");
    assert_eq!(record.meta.plain_sha256, hex::encode(sha256(&data)));
    let again = push_digest_after(&p, 0, split_digest_after(&data, 8192), data.len())
        .await
        .unwrap();
    assert!(again.already_stored);
}

/// A page sealed whole is laid out chunk by chunk in one buffer: pages ending just before,
/// at and after chunk boundaries, compressed or not, open to exactly what was sent.
#[tokio::test]
async fn pages_sealed_whole_round_trip_at_every_chunk_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::test_pipeline(dir.path(), PipelineConfig::default());
    let cs = p.config.chunk_size as usize;
    let text = b"Rechnung Nr. 2026-0815 ".repeat(cs);
    let mut noise = vec![0u8; 3 * cs + 17];
    getrandom::fill(&mut noise).unwrap();
    let sizes = [0, 1, cs - 1, cs, cs + 1, 2 * cs, 3 * cs + 17];
    for (i, n) in sizes.into_iter().enumerate() {
        for (j, data) in [&noise[..n], &text[..n]].into_iter().enumerate() {
            let index = (i * 2 + j) as u32;
            let r = push(&p, entry(index, data), split(data, 5000))
                .await
                .unwrap();
            assert_eq!(read_back(&p, &r.object_key).await, data, "{n} bytes");
        }
    }
}
