//! One conformance suite every metadata backend passes: the embedded redb store and
//! PostgreSQL (a real server, started on loopback by scripts/test-servers.sh; a fresh database
//! per test). Races run against two handles on one database where the backend allows it (two
//! PostgreSQL connections pools, as two nodes would hold), or one shared handle (redb, which
//! one process opens at a time).

use std::sync::{Arc, Barrier};

use quire_codecs::wire::{DeviceState, PageEntry, Role, UploadId};
use quire_server::auth::DeviceRecord;
use quire_server::meta::{Grant, Hold, Meta, MetaError, MetaStore, PgMeta, PgTarget, StoredPage};

use crate::common::postgres::fresh_database;

/// A backend under test: handles on one fresh store.
trait Backend {
    /// The store.
    fn store(&self) -> Arc<dyn MetaStore>;
    /// A second handle on the same store, as a second node holds it.
    fn peer(&self) -> Arc<dyn MetaStore>;
}

struct Redb {
    _dir: tempfile::TempDir,
    meta: Arc<dyn MetaStore>,
}

impl Redb {
    fn new() -> Redb {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(Meta::open(&dir.path().join("meta.redb")).unwrap());
        Redb { _dir: dir, meta }
    }
}

impl Backend for Redb {
    fn store(&self) -> Arc<dyn MetaStore> {
        self.meta.clone()
    }
    fn peer(&self) -> Arc<dyn MetaStore> {
        self.meta.clone()
    }
}

struct Postgres {
    target: PgTarget,
    meta: Arc<dyn MetaStore>,
}

fn pg_target(url: String) -> PgTarget {
    PgTarget {
        url,
        password: None,
        pool_size: 4,
        ca: None,
    }
}

impl Postgres {
    fn new() -> Postgres {
        let target = pg_target(fresh_database());
        let meta = Arc::new(PgMeta::open(&target).unwrap());
        Postgres { target, meta }
    }
}

impl Backend for Postgres {
    fn store(&self) -> Arc<dyn MetaStore> {
        self.meta.clone()
    }
    fn peer(&self) -> Arc<dyn MetaStore> {
        Arc::new(PgMeta::open(&self.target).unwrap())
    }
}

fn entry(i: u32) -> PageEntry {
    PageEntry {
        index: i,
        name: format!("{i}.jpg"),
        size: 5 + u64::from(i),
        sha256: [i as u8; 32],
    }
}

fn stored(tenant: &str, job: &str, e: PageEntry, upload: Option<UploadId>) -> StoredPage {
    StoredPage {
        tenant: tenant.into(),
        job: job.into(),
        object_key: format!("{tenant}/{job}/{}", e.index),
        entry: e,
        stored_bytes: 64,
        upload,
        holder: None,
    }
}

/// Runs `f(i)` on `n` threads released together; returns their results in order.
fn race<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn tenants_exist_once(b: &dyn Backend) {
    let m = b.store();
    assert!(!m.tenant_exists("acme").unwrap());
    m.create_tenant("acme").unwrap();
    assert!(matches!(m.create_tenant("acme"), Err(MetaError::Exists(_))));
    m.ensure_tenant("acme").unwrap();
    m.ensure_tenant("zeta").unwrap();
    m.ensure_tenant("Bravo").unwrap();
    assert!(m.tenant_exists("acme").unwrap());
    assert_eq!(
        m.tenants().unwrap(),
        ["Bravo", "acme", "zeta"],
        "byte order"
    );
}

fn tokens_are_single_use_and_expire(b: &dyn Backend) {
    let m = b.store();
    assert!(matches!(
        m.create_token(&[1; 32], "nobody", 1000),
        Err(MetaError::NoSuchTenant(_))
    ));
    m.create_tenant("acme").unwrap();
    m.create_token(&[1; 32], "acme", 1000).unwrap();
    m.create_token(&[2; 32], "acme", 1000).unwrap();
    m.create_token(&[3; 32], "acme", u64::MAX).unwrap();
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
        (rec.tenant.as_str(), rec.state, rec.role),
        ("acme", DeviceState::Pending, Role::Device)
    );
    assert!(
        matches!(
            m.enroll(&[2; 32], 999, "d3", [0; 32]),
            Err(MetaError::BadToken)
        ),
        "reused"
    );
    // A device id that exists is refused and the token is not used up by the refusal.
    assert!(matches!(
        m.enroll(&[3; 32], 999, "d2", [0; 32]),
        Err(MetaError::Exists(_))
    ));
    m.enroll(&[3; 32], 999, "d3", [6; 32]).unwrap();
    assert_eq!(m.device("d2").unwrap().unwrap().secret_hash, [5; 32]);
    assert_eq!(m.device("d3").unwrap().unwrap().secret_hash, [6; 32]);
    assert!(m.device("d4").unwrap().is_none());
}

/// Eight clients (on two handles: two nodes) redeem one token at once: one device enrolls.
fn a_raced_token_enrolls_one_device(b: &dyn Backend) {
    let m = b.store();
    m.create_tenant("acme").unwrap();
    for round in 0..5u8 {
        m.create_token(&[round; 32], "acme", 1000).unwrap();
        let handles = [b.store(), b.peer()];
        let results = race(8, move |i| {
            handles[i % 2].enroll(&[round; 32], 10, &format!("r{round}-d{i}"), [i as u8; 32])
        });
        let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: {results:?}");
        assert!(results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(MetaError::BadToken))));
    }
    assert_eq!(m.devices("acme").unwrap().len(), 5);
}

fn devices_change_state_and_stay_revoked(b: &dyn Backend) {
    let m = b.store();
    let rec = |id: &str, tenant: &str| DeviceRecord {
        device_id: id.into(),
        tenant: tenant.into(),
        role: Role::Device,
        state: DeviceState::Pending,
        secret_hash: [7; 32],
    };
    assert!(matches!(
        m.put_device(&rec("d1", "acme")),
        Err(MetaError::NoSuchTenant(_))
    ));
    m.create_tenant("acme").unwrap();
    m.create_tenant("beta").unwrap();
    m.put_device(&rec("d1", "acme")).unwrap();
    m.put_device(&rec("d0", "beta")).unwrap();
    let mut admin = rec("ad", "acme");
    admin.role = Role::TenantAdmin;
    m.put_device(&admin).unwrap();
    assert_eq!(m.device("ad").unwrap().unwrap(), admin);
    assert_eq!(
        m.set_device_state("d1", DeviceState::Enabled)
            .unwrap()
            .state,
        DeviceState::Enabled
    );
    assert_eq!(m.rotate_secret("d1", [8; 32]).unwrap().secret_hash, [8; 32]);
    m.set_device_state("d1", DeviceState::Revoked).unwrap();
    assert!(matches!(
        m.set_device_state("d1", DeviceState::Enabled),
        Err(MetaError::Revoked(_))
    ));
    assert!(matches!(
        m.rotate_secret("d1", [9; 32]),
        Err(MetaError::Revoked(_))
    ));
    assert!(matches!(
        m.set_device_state("nope", DeviceState::Enabled),
        Err(MetaError::NoSuchDevice(_))
    ));
    let d1 = m.device("d1").unwrap().unwrap();
    assert_eq!((d1.state, d1.secret_hash), (DeviceState::Revoked, [8; 32]));
    let all: Vec<_> = m
        .all_devices()
        .unwrap()
        .into_iter()
        .map(|d| (d.device_id, d.tenant))
        .collect();
    assert_eq!(
        all,
        [("ad", "acme"), ("d0", "beta"), ("d1", "acme")]
            .map(|(d, t)| (d.to_string(), t.to_string()))
    );
    assert_eq!(m.devices("beta").unwrap().len(), 1);
}

/// A revoke racing an enable (two administrators on two nodes) never ends enabled.
fn a_revoke_is_never_undone_by_a_race(b: &dyn Backend) {
    let m = b.store();
    m.create_tenant("acme").unwrap();
    for round in 0..10 {
        let id = format!("d{round}");
        m.put_device(&DeviceRecord {
            device_id: id.clone(),
            tenant: "acme".into(),
            role: Role::Device,
            state: DeviceState::Enabled,
            secret_hash: [1; 32],
        })
        .unwrap();
        let handles = [b.store(), b.peer()];
        let id2 = id.clone();
        race(2, move |i| {
            let state = [DeviceState::Revoked, DeviceState::Disabled][i];
            let _ = handles[i].set_device_state(&id2, state);
        });
        // Whichever ran second, the device ends revoked or (disable first) revoked anyway.
        assert_eq!(m.device(&id).unwrap().unwrap().state, DeviceState::Revoked);
    }
}

fn jobs_and_pages_are_recorded_per_tenant(b: &dyn Backend) {
    let m = b.store();
    m.record_page("a", "j", &entry(1), "k1", 50, None).unwrap();
    m.record_page("a", "j", &entry(0), "k0", 50, None).unwrap();
    m.record_page("a", "j2", &entry(0), "x", 50, None).unwrap();
    m.record_page("b", "j", &entry(7), "y", 50, None).unwrap();
    // Recording a page again replaces it.
    let mut again = entry(1);
    again.name = "1-again.jpg".into();
    m.record_page("a", "j", &again, "k1b", 51, None).unwrap();
    assert_eq!(m.pages("a", "j").unwrap(), vec![entry(0), again]);
    assert_eq!(m.pages("b", "j").unwrap(), vec![entry(7)]);
    assert!(m.page_recorded("a", "j", 0).unwrap());
    assert!(!m.page_recorded("a", "j", 2).unwrap());
    assert!(!m.page_recorded("b", "j", 0).unwrap());
    let row = m.job("a", "j").unwrap().unwrap();
    assert!(!row.committed);
    assert!(row.created_unix > 0);
    m.commit_job("a", "j", 2, 10).unwrap();
    let row = m.job("a", "j").unwrap().unwrap();
    assert!(row.committed && row.committed_unix > 0);
    assert_eq!((row.page_count, row.bytes), (2, 10));
    assert_eq!(m.job("a", "nope").unwrap(), None);
    let jobs: Vec<String> = m.jobs("a").unwrap().into_iter().map(|(j, _)| j).collect();
    assert_eq!(jobs, ["j", "j2"]);
    let st = m.stats("a").unwrap();
    assert_eq!((st.jobs, st.committed_jobs, st.committed_bytes), (2, 1, 10));
    // All or none: a batch with pages of several jobs is one call.
    m.record_pages(&[
        stored("c", "x", entry(0), None),
        stored("c", "y", entry(0), None),
        stored("c", "x", entry(1), None),
    ])
    .unwrap();
    assert_eq!(m.pages("c", "x").unwrap().len(), 2);
    assert_eq!(m.pages("c", "y").unwrap().len(), 1);
}

/// Names as users give them: non-ASCII, 255 bytes, and a job id at the longest.
fn long_and_non_ascii_names_round_trip(b: &dyn Backend) {
    let m = b.store();
    let name: String = "é".repeat(127) + "x"; // 255 bytes
    assert_eq!(name.len(), 255);
    let job = "Ж".repeat(60);
    let e = PageEntry {
        index: 99_999,
        name: name.clone(),
        size: 100 * 1024 * 1024,
        sha256: [0xab; 32],
    };
    m.record_page("acme", &job, &e, "k", 1 << 33, None).unwrap();
    assert_eq!(m.pages("acme", &job).unwrap(), vec![e]);
    m.commit_job("acme", &job, 1, 100 * 1024 * 1024).unwrap();
    assert_eq!(m.jobs("acme").unwrap()[0].0, job);
}

/// Eight writers (on two handles) record pages of one job at once, overlapping: every page
/// is there once, the job row once.
fn concurrent_page_records_of_one_job_all_land(b: &dyn Backend) {
    let m = b.store();
    let handles = [b.store(), b.peer()];
    race(8, move |i| {
        for round in 0..10u32 {
            // Writer i covers pages 10i..10i+19: half of them another writer's too.
            let batch: Vec<_> = (0..2u32)
                .map(|k| stored("acme", "big", entry(10 * i as u32 + round + 10 * k), None))
                .collect();
            handles[i % 2].record_pages(&batch).unwrap();
        }
    });
    let pages = m.pages("acme", "big").unwrap();
    assert_eq!(pages.len(), 90);
    assert!(pages.iter().enumerate().all(|(i, p)| p.index == i as u32));
    assert_eq!(m.jobs("acme").unwrap().len(), 1);
}

fn a_job_belongs_to_one_device_and_one_upload(b: &dyn Backend) {
    let m = b.store();
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
    m.claim_job("a", "old", "d1", None).unwrap();
    m.claim_job("a", "old", "d1", Some(u2)).unwrap();
    assert!(matches!(
        m.claim_job("a", "old", "d1", None),
        Err(MetaError::OtherUpload { .. })
    ));
    m.record_page("a", "j", &entry(0), "k0", 50, Some(u1))
        .unwrap();
    m.commit_job("a", "j", 1, 5).unwrap();
    let row = m.claim_job("a", "j", "d1", Some(u2)).unwrap();
    assert!(row.committed);
    assert_eq!(
        (row.upload, row.owner),
        (Some(u1.to_hex()), Some("d1".into()))
    );
    assert!(matches!(
        m.claim_job("a", "j", "d2", None),
        Err(MetaError::Owned { .. })
    ));
}

/// Two devices (on two nodes) race for one job id: one owns it, the other is told so.
fn two_devices_racing_for_a_job_get_one_owner(b: &dyn Backend) {
    for round in 0..10 {
        let handles = [b.store(), b.peer()];
        let job = format!("j{round}");
        let results = race(4, move |i| {
            handles[i % 2].claim_job("a", &job, &format!("d{i}"), Some(UploadId([i as u8; 16])))
        });
        let owners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(owners.len(), 1, "{results:?}");
        assert!(results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(MetaError::Owned { .. }))));
        let row = b.store().job("a", &format!("j{round}")).unwrap().unwrap();
        assert_eq!(row.owner, owners[0].owner);
    }
}

fn pages_of_another_upload_are_found_before_commit(b: &dyn Backend) {
    let m = b.store();
    let (u1, u2) = (UploadId([1; 16]), UploadId([2; 16]));
    assert_eq!(m.commit_view("a", "none").unwrap().job, None);
    m.claim_job("a", "j", "d1", Some(u1)).unwrap();
    m.record_page("a", "j", &entry(0), "k0", 50, None).unwrap();
    m.record_page("a", "j", &entry(1), "k1", 50, Some(u1))
        .unwrap();
    assert_eq!(m.commit_view("a", "j").unwrap().foreign, Vec::<u32>::new());
    m.record_page("a", "j", &entry(2), "k2", 50, Some(u2))
        .unwrap();
    m.record_page("a", "j", &entry(12), "k12", 50, Some(u2))
        .unwrap();
    let view = m.commit_view("a", "j").unwrap();
    assert_eq!(view.foreign, vec![2, 12]);
    assert_eq!(view.pages.len(), 4);
    assert_eq!(view.job.unwrap().owner.as_deref(), Some("d1"));
}

fn an_uncommitted_job_is_forgotten_with_its_object_keys(b: &dyn Backend) {
    let m = b.store();
    assert!(matches!(
        m.forget_uncommitted("a", "j"),
        Err(MetaError::NotFound(_))
    ));
    m.record_page("a", "j", &entry(0), "k0", 50, None).unwrap();
    m.record_page("a", "j", &entry(1), "k1", 50, None).unwrap();
    m.record_page("a", "j2", &entry(0), "other", 50, None)
        .unwrap();
    let mut keys = m.forget_uncommitted("a", "j").unwrap();
    keys.sort();
    assert_eq!(keys, ["k0", "k1"]);
    assert_eq!(m.job("a", "j").unwrap(), None);
    assert!(m.pages("a", "j").unwrap().is_empty());
    assert_eq!(m.pages("a", "j2").unwrap().len(), 1);
    m.commit_job("a", "j2", 1, 5).unwrap();
    assert!(matches!(
        m.forget_uncommitted("a", "j2"),
        Err(MetaError::Committed(_))
    ));
}

fn delivery_is_recorded_once_and_deletion_forgets_pages(b: &dyn Backend) {
    let m = b.store();
    for (tenant, job) in [("a", "j"), ("a", "j2"), ("ab", "j"), ("b", "j")] {
        m.record_page(tenant, job, &entry(0), "k", 50, None)
            .unwrap();
        m.record_page(tenant, job, &entry(1), "k", 50, None)
            .unwrap();
        m.commit_job(tenant, job, 2, 10).unwrap();
    }
    m.record_page("a", "open", &entry(0), "k", 50, None)
        .unwrap();
    assert!(matches!(
        m.mark_delivered("a", "open", 5),
        Err(MetaError::NotFound(_))
    ));
    assert!(matches!(
        m.mark_delivered("a", "none", 5),
        Err(MetaError::NotFound(_))
    ));
    assert_eq!(
        m.mark_delivered("a", "j", 50).unwrap().delivered_unix,
        Some(50)
    );
    assert_eq!(
        m.mark_delivered("a", "j", 60).unwrap().delivered_unix,
        Some(50),
        "the first acknowledgement wins"
    );
    m.mark_deleted("a", "j", 100).unwrap();
    m.mark_deleted("a", "j", 200).unwrap();
    assert!(m.pages("a", "j").unwrap().is_empty());
    let row = m.job("a", "j").unwrap().unwrap();
    assert_eq!(
        (row.deleted_unix, row.delivered_unix, row.page_count),
        (Some(100), Some(50), 2)
    );
    assert!(matches!(
        m.mark_deleted("a", "none", 1),
        Err(MetaError::NotFound(_))
    ));
    assert_eq!(m.pages("a", "j2").unwrap().len(), 2);
    // Shredding tenant a forgets its page rows, not those of `ab` or `b`.
    assert_eq!(m.forget_pages("a").unwrap(), 3);
    assert!(m.pages("a", "j2").unwrap().is_empty());
    assert_eq!(m.pages("ab", "j").unwrap().len(), 2);
    assert_eq!(m.pages("b", "j").unwrap().len(), 2);
    assert!(
        m.job("a", "j2").unwrap().is_some(),
        "the job row (counts) stays"
    );
}

fn holds_cover_a_job_or_the_whole_tenant(b: &dyn Backend) {
    let m = b.store();
    let hold = |reason: &str| Hold {
        reason: reason.into(),
        by: "admin".into(),
        since_unix: 42,
    };
    assert_eq!(m.hold_on("a", "j").unwrap(), None);
    assert!(!m.set_hold("a", Some("j"), Some(&hold("case 1"))).unwrap());
    assert!(m.set_hold("a", Some("j"), Some(&hold("case 2"))).unwrap());
    assert_eq!(m.hold_on("a", "j").unwrap(), Some(hold("case 2")));
    assert_eq!(m.hold_on("a", "k").unwrap(), None);
    assert_eq!(m.hold_on("b", "j").unwrap(), None);
    assert!(!m.set_hold("a", None, Some(&hold("audit"))).unwrap());
    assert_eq!(
        m.hold_on("a", "j").unwrap(),
        Some(hold("case 2")),
        "the job's own first"
    );
    assert_eq!(m.hold_on("a", "k").unwrap(), Some(hold("audit")));
    assert!(m.set_hold("a", Some("j"), None).unwrap());
    assert!(!m.set_hold("a", Some("j"), None).unwrap());
    assert_eq!(m.hold_on("a", "j").unwrap(), Some(hold("audit")));
    assert!(m.set_hold("a", None, None).unwrap());
    assert_eq!(m.hold_on("a", "k").unwrap(), None);
}

fn grants_and_key_versions(b: &dyn Backend) {
    let m = b.store();
    let g = Grant {
        expires_unix: 1_900_000_000,
        reason: "ticket 7 — ümlaut".into(),
        granted_by: "root".into(),
    };
    assert_eq!(m.grant("a", "p").unwrap(), None);
    m.put_grant("a", "p", &g).unwrap();
    assert_eq!(m.grant("a", "p").unwrap(), Some(g.clone()));
    assert_eq!(m.grant("b", "p").unwrap(), None);
    assert!(m.remove_grant("a", "p").unwrap());
    assert!(!m.remove_grant("a", "p").unwrap());
    assert_eq!(m.kek_versions("a").unwrap(), 0);
    m.record_kek_versions("a", 3).unwrap();
    m.record_kek_versions("a", 2).unwrap();
    assert_eq!(m.kek_versions("a").unwrap(), 3, "never lowered");
    m.record_kek_versions("a", 4).unwrap();
    assert_eq!(m.kek_versions("a").unwrap(), 4);
    assert_eq!(m.kek_versions("b").unwrap(), 0);
}

/// What a page reads before it is stored, in one call, matches the separate lookups.
fn a_page_context_is_what_the_lookups_say(b: &dyn Backend) {
    let m = b.store();
    let ctx = m.page_context("acme", "j", "d1", 0).unwrap();
    assert_eq!((ctx.device, ctx.job, ctx.recorded), (None, None, false));
    m.create_tenant("acme").unwrap();
    let rec = DeviceRecord {
        device_id: "d1".into(),
        tenant: "acme".into(),
        role: Role::Device,
        state: DeviceState::Enabled,
        secret_hash: [3; 32],
    };
    m.put_device(&rec).unwrap();
    let u = UploadId([4; 16]);
    m.claim_job("acme", "j", "d1", Some(u)).unwrap();
    m.record_page("acme", "j", &entry(2), "k", 50, Some(u))
        .unwrap();
    for index in [0, 2] {
        let ctx = m.page_context("acme", "j", "d1", index).unwrap();
        assert_eq!(ctx.device.as_ref(), Some(&rec));
        assert_eq!(ctx.job, m.job("acme", "j").unwrap());
        assert_eq!(ctx.recorded, index == 2);
    }
    let job = m.page_context("acme", "j", "d1", 2).unwrap().job.unwrap();
    assert!(quire_server::meta::held_by(&job, "j", "d1", Some(u)).unwrap());
    assert!(quire_server::meta::held_by(&job, "j", "d2", Some(u)).is_err());
    let other = m.page_context("acme", "other", "d1", 2).unwrap();
    assert_eq!((other.job, other.recorded), (None, false));
}

/// A page with a holder is recorded only while its device is enabled and its upload holds
/// the job uncommitted, decided in the write itself (the check a node skips reading for the
/// later pages of a job its connection opened); a refused page leaves nothing behind, and the
/// rest of its batch is recorded.
fn a_held_page_is_recorded_only_while_its_upload_holds_the_job(b: &dyn Backend) {
    let m = b.store();
    m.create_tenant("acme").unwrap();
    for id in ["d1", "d2"] {
        m.put_device(&DeviceRecord {
            device_id: id.into(),
            tenant: "acme".into(),
            role: Role::Device,
            state: DeviceState::Enabled,
            secret_hash: [3; 32],
        })
        .unwrap();
    }
    let (mine, theirs) = (UploadId([4; 16]), UploadId([5; 16]));
    let held = |job: &str, index: u32, upload: UploadId, device: &str| StoredPage {
        holder: Some(device.into()),
        ..stored("acme", job, entry(index), Some(upload))
    };
    m.claim_job("acme", "j", "d1", Some(mine)).unwrap();
    m.claim_job("acme", "k", "d1", Some(mine)).unwrap();
    let batch = [
        held("j", 0, mine, "d1"),
        held("j", 1, theirs, "d1"),    // another upload of the device
        held("j", 2, mine, "d2"),      // another device
        held("absent", 0, mine, "d1"), // never opened, or aborted
        held("k", 0, mine, "d1"),
        held("j", 3, mine, "nobody"), // an unknown device
    ];
    assert_eq!(m.record_pages(&batch).unwrap(), vec![1, 2, 3, 5]);
    let indexes = |job: &str| -> Vec<u32> {
        m.pages("acme", job)
            .unwrap()
            .iter()
            .map(|p| p.index)
            .collect()
    };
    assert_eq!(indexes("j"), vec![0]);
    assert_eq!(indexes("k"), vec![0]);
    assert_eq!(m.job("acme", "absent").unwrap(), None, "no job row made");

    m.set_device_state("d1", DeviceState::Disabled).unwrap();
    assert_eq!(
        m.record_pages(&[held("j", 4, mine, "d1")]).unwrap(),
        vec![0]
    );
    m.set_device_state("d1", DeviceState::Enabled).unwrap();
    assert!(m
        .record_pages(&[held("j", 4, mine, "d1")])
        .unwrap()
        .is_empty());

    m.commit_job("acme", "j", 2, 20).unwrap();
    assert_eq!(
        m.record_pages(&[held("j", 5, mine, "d1")]).unwrap(),
        vec![0]
    );
    assert_eq!(indexes("j"), vec![0, 4]);

    m.forget_uncommitted("acme", "k").unwrap();
    assert_eq!(
        m.record_pages(&[held("k", 1, mine, "d1")]).unwrap(),
        vec![0]
    );
    assert_eq!(
        m.job("acme", "k").unwrap(),
        None,
        "an aborted job stays gone"
    );
    // Without a holder (an older caller, or a tool), the job's row is made as before.
    m.record_pages(&[stored("acme", "new", entry(0), None)])
        .unwrap();
    assert!(m.job("acme", "new").unwrap().is_some());
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $( #[test] fn $name() { super::$name(&super::Redb::new()) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::Postgres::new()) } )*
        }
    };
}

conformance!(
    tenants_exist_once,
    tokens_are_single_use_and_expire,
    a_raced_token_enrolls_one_device,
    devices_change_state_and_stay_revoked,
    a_revoke_is_never_undone_by_a_race,
    jobs_and_pages_are_recorded_per_tenant,
    long_and_non_ascii_names_round_trip,
    concurrent_page_records_of_one_job_all_land,
    a_job_belongs_to_one_device_and_one_upload,
    two_devices_racing_for_a_job_get_one_owner,
    pages_of_another_upload_are_found_before_commit,
    an_uncommitted_job_is_forgotten_with_its_object_keys,
    delivery_is_recorded_once_and_deletion_forgets_pages,
    holds_cover_a_job_or_the_whole_tenant,
    grants_and_key_versions,
    a_page_context_is_what_the_lookups_say,
    a_held_page_is_recorded_only_while_its_upload_holds_the_job,
);
