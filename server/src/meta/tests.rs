//! Unit tests of the embedded metadata store: what only it does (reopening, purging rows of
//! earlier versions on open). Every operation is tested on each backend in
//! tests/meta_conformance.rs.
use super::*;

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

fn entry(i: u32) -> PageEntry {
    PageEntry {
        index: i,
        name: format!("{i}.jpg"),
        size: 5,
        sha256: [i as u8; 32],
    }
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
