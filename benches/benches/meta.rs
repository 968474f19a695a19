//! The metadata path alone: what a page costs the metadata store, on the embedded redb file
//! and on PostgreSQL, without the network, sealing or the object store.
//!
//! Per page the page recorder writes it, in batches of whatever is waiting (one transaction
//! each), checking in the write that the device still holds the job. A page of a job its
//! connection opened needs nothing else (`opened`); any other page first reads its context
//! (device, job row, "already recorded?": `read_each`, the path of every page before the
//! connection remembered its open jobs). Measured: one page per write (a lone scanner, the
//! worst case) and 16 (a busy server).
//!
//! `cargo bench -p quire-benches --bench meta`; PostgreSQL only when
//! `QUIRE_TEST_POSTGRES_URL` names a server where databases may be created (the test
//! server `source scripts/test-servers.sh` starts), else redb alone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quire_codecs::wire::{DeviceState, PageEntry, Role};
use quire_server::auth::DeviceRecord;
use quire_server::meta::{Meta, MetaStore, PgMeta, PgTarget, StoredPage};

const TENANT: &str = "bench";
const DEVICE: &str = "scanner-1";
const JOB: &str = "job-1";

fn prepared(meta: Arc<dyn MetaStore>) -> Arc<dyn MetaStore> {
    meta.ensure_tenant(TENANT).unwrap();
    meta.put_device(&DeviceRecord {
        device_id: DEVICE.into(),
        tenant: TENANT.into(),
        role: Role::Device,
        state: DeviceState::Enabled,
        secret_hash: [7; 32],
    })
    .unwrap();
    meta.claim_job(TENANT, JOB, DEVICE, None).unwrap();
    meta
}

/// A fresh database on the test server, by psql (as the tests make theirs).
fn postgres() -> Option<Arc<dyn MetaStore>> {
    let server = std::env::var("QUIRE_TEST_POSTGRES_URL").ok()?;
    let name = format!("quire_bench_{}", std::process::id());
    let made = std::process::Command::new("psql")
        .args([&server, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .ok()?;
    if !made.success() {
        return None;
    }
    let kept: Vec<&str> = server
        .split_whitespace()
        .filter(|kv| !kv.starts_with("dbname="))
        .collect();
    let url = format!("{} dbname={name}", kept.join(" "));
    let meta = PgMeta::open(&PgTarget {
        url,
        password: None,
        pool_size: 4,
        ca: None,
    })
    .ok()?;
    Some(Arc::new(meta))
}

fn page(index: u32) -> StoredPage {
    StoredPage {
        tenant: TENANT.into(),
        job: JOB.into(),
        entry: PageEntry {
            index,
            name: format!("p{index:06}.tif"),
            size: 50_000,
            sha256: [1; 32],
        },
        object_key: format!("tenants/{TENANT}/jobs/{JOB}/pages/{index:06}"),
        stored_bytes: 50_100,
        upload: None,
        holder: Some(DEVICE.into()),
    }
}

fn bench_meta(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut backends: Vec<(&str, Arc<dyn MetaStore>)> = vec![(
        "redb",
        prepared(Arc::new(Meta::open(&dir.path().join("meta.redb")).unwrap())),
    )];
    match postgres() {
        Some(pg) => backends.push(("postgres", prepared(pg))),
        None => eprintln!("QUIRE_TEST_POSTGRES_URL unset or unusable: redb only"),
    }
    let mut g = c.benchmark_group("meta_page");
    g.sample_size(20);
    for (name, meta) in &backends {
        let next = AtomicU32::new(0);
        for (batch, read_each) in [(1u32, true), (1, false), (16, true), (16, false)] {
            let path = if read_each { "read_each" } else { "opened" };
            g.throughput(Throughput::Elements(u64::from(batch)));
            g.bench_function(format!("{name}/batch{batch}/{path}"), |b| {
                b.iter(|| {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    let pages: Vec<StoredPage> = (first..first + batch).map(page).collect();
                    for p in pages.iter().filter(|_| read_each) {
                        let seen = meta
                            .page_context(TENANT, JOB, DEVICE, p.entry.index)
                            .unwrap();
                        assert!(seen.device.is_some() && !seen.recorded);
                    }
                    let refused = meta.record_pages(&pages).unwrap();
                    assert!(refused.is_empty());
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_meta);
criterion_main!(benches);
