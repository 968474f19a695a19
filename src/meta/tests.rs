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
    m.record_page("a", "j", &e(1), "k1", 50).unwrap();
    m.record_page("a", "j", &e(0), "k0", 50).unwrap();
    m.record_page("a", "j2", &e(0), "x", 50).unwrap();
    m.record_page("b", "j", &e(7), "y", 50).unwrap();
    drop(m);
    let m = Meta::open(&dir.path().join("meta.redb")).unwrap();
    assert_eq!(m.pages("a", "j").unwrap(), vec![e(0), e(1)]);
    assert_eq!(m.pages("b", "j").unwrap(), vec![e(7)]);
    assert!(!m.job("a", "j").unwrap().unwrap().committed);
    m.commit_job("a", "j", 2, 10).unwrap();
    assert!(m.job("a", "j").unwrap().unwrap().committed);
    assert_eq!(m.job("a", "nope").unwrap(), None);
}
