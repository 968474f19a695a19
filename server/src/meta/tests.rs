//! Unit tests of the metadata store.
use super::*;

#[test]
fn tokens_are_single_use_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
    m.create_tenant("acme").unwrap();
    m.create_token(&[1; 32], "acme", 1000).unwrap();
    m.create_token(&[2; 32], "acme", 1000).unwrap();
    assert!(matches!(
        m.enroll(&[9; 32], 10, "d0", [0; 32]),
        Err(MetaError::BadToken)
    ));
    assert!(
        matches!(
            m.enroll(&[1; 32], 1000, "d1", [0; 32]),
            Err(MetaError::BadToken)
        ),
        "expired"
    );
    let rec = m.enroll(&[2; 32], 999, "d2", [5; 32]).unwrap();
    assert_eq!(
        (rec.tenant.as_str(), rec.state),
        ("acme", DeviceState::Pending)
    );
    assert!(
        matches!(
            m.enroll(&[2; 32], 999, "d3", [0; 32]),
            Err(MetaError::BadToken)
        ),
        "reused"
    );
    assert_eq!(m.device("d2").unwrap().unwrap().secret_hash, [5; 32]);
    assert!(m.device("d3").unwrap().is_none());
}

#[test]
fn jobs_and_pages_persist_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
    let e = |i: u32| PageEntry {
        index: i,
        name: format!("{i}.jpg"),
        size: 5,
        sha256: [i as u8; 32],
    };
    m.record_page("a", "j", &e(1), "k1", 50, None).unwrap();
    m.record_page("a", "j", &entry(0), "k0", 50, None).unwrap();
    m.record_page("a", "j2", &e(0), "x", 50, None).unwrap();
    m.record_page("b", "j", &e(7), "y", 50, None).unwrap();
    drop(m);
    let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
    assert_eq!(m.pages("a", "j").unwrap(), vec![e(0), e(1)]);
    assert_eq!(m.pages("b", "j").unwrap(), vec![e(7)]);
    assert!(!m.job("a", "j").unwrap().unwrap().committed);
    m.commit_job("a", "j", 2, 10).unwrap();
    assert!(m.job("a", "j").unwrap().unwrap().committed);
    assert_eq!(m.job("a", "nope").unwrap(), None);
}

/// A fresh store in a temporary directory (kept alive by the first element).
fn store() -> (tempfile::TempDir, Meta) {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
    (dir, m)
}

fn entry(i: u32) -> PageEntry {
    PageEntry {
        index: i,
        name: format!("{i}.jpg"),
        size: 5,
        sha256: [i as u8; 32],
    }
}

#[test]
fn a_job_belongs_to_one_device_and_one_upload() {
    let (_dir, m) = store();
    let (u1, u2) = (UploadId([1; 16]), UploadId([2; 16]));
    m.claim_job("a", "j", "d1", Some(u1)).unwrap();
    m.claim_job("a", "j", "d1", Some(u1)).unwrap();
    assert!(matches!(
        m.claim_job("a", "j", "d2", Some(u1)),
        Err(MetaError::Owned { .. })
    ));
    for other in [Some(u2), None] {
        assert!(matches!(
            m.claim_job("a", "j", "d1", other),
            Err(MetaError::OtherUpload { .. })
        ));
    }
    // A job an older client opened (no upload) is bound to the first upload that resumes it.
    m.claim_job("a", "old", "d1", None).unwrap();
    m.claim_job("a", "old", "d1", None).unwrap();
    m.claim_job("a", "old", "d1", Some(u2)).unwrap();
    assert!(matches!(
        m.claim_job("a", "old", "d1", None),
        Err(MetaError::OtherUpload { .. })
    ));
    // Commit keeps the binding; a committed job answers any upload of its device.
    m.record_page("a", "j", &entry(0), "k0", 50, Some(u1))
        .unwrap();
    m.commit_job("a", "j", 1, 5).unwrap();
    let row = m.claim_job("a", "j", "d1", Some(u2)).unwrap();
    assert!(row.committed);
    assert_eq!(row.upload, Some(u1.to_hex()));
    assert!(matches!(
        m.claim_job("a", "j", "d2", None),
        Err(MetaError::Owned { .. })
    ));
}

#[test]
fn pages_of_another_upload_are_found_before_commit() {
    let (_dir, m) = store();
    let (u1, u2) = (UploadId([1; 16]), UploadId([2; 16]));
    m.claim_job("a", "j", "d1", Some(u1)).unwrap();
    // Page 0 from before uploads were recorded counts as the job's own.
    m.record_page("a", "j", &entry(0), "k0", 50, None).unwrap();
    m.record_page("a", "j", &entry(1), "k1", 50, Some(u1))
        .unwrap();
    assert_eq!(m.commit_view("a", "j").unwrap().foreign, Vec::<u32>::new());
    m.record_page("a", "j", &entry(2), "k2", 50, Some(u2))
        .unwrap();
    m.record_page("a", "j", &entry(12), "k12", 50, Some(u2))
        .unwrap();
    assert_eq!(m.commit_view("a", "j").unwrap().foreign, vec![2, 12]);
    assert_eq!(
        m.commit_view("a", "none").unwrap().foreign,
        Vec::<u32>::new()
    );
}

/// Page names, sizes and digests do not outlive the pages: a deleted job's rows go with it,
/// a shredded tenant's all go, and rows an earlier version kept are purged when the store
/// opens. Nothing of another job or tenant (even one whose name extends this one's) goes.
#[test]
fn pages_of_deleted_jobs_and_shredded_tenants_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let m = Meta::open(&path).unwrap();
    for (tenant, job) in [
        ("a", "j"),
        ("a", "j2"),
        ("a", "old"),
        ("ab", "j"),
        ("b", "j"),
    ] {
        m.record_page(tenant, job, &entry(0), "k", 50, None)
            .unwrap();
        m.record_page(tenant, job, &entry(1), "k", 50, None)
            .unwrap();
        m.commit_job(tenant, job, 2, 10).unwrap();
    }
    m.mark_deleted("a", "j", 100).unwrap();
    assert!(m.pages("a", "j").unwrap().is_empty());
    let row = m.job("a", "j").unwrap().unwrap();
    assert_eq!((row.deleted_unix, row.page_count), (Some(100), 2));
    assert_eq!(m.pages("a", "j2").unwrap().len(), 2);

    // As an earlier version left it: marked deleted, rows kept.
    m.update_job("a", "old", |row| {
        row.deleted_unix = Some(50);
        Ok(())
    })
    .unwrap();
    assert_eq!(m.pages("a", "old").unwrap().len(), 2);
    drop(m);
    let m = Meta::open(&path).unwrap();
    assert!(
        m.pages("a", "old").unwrap().is_empty(),
        "not purged on open"
    );
    assert_eq!(m.pages("a", "j2").unwrap().len(), 2);

    assert_eq!(m.forget_pages("a").unwrap(), 2);
    assert!(m.pages("a", "j2").unwrap().is_empty());
    assert_eq!(m.pages("ab", "j").unwrap().len(), 2);
    assert_eq!(m.pages("b", "j").unwrap().len(), 2);
    assert!(
        m.job("a", "j2").unwrap().is_some(),
        "the job row (counts) stays"
    );
}
