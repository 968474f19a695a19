//! Ingest throughput with the tenant keys in each vault backend, side by side in one run: the
//! file master key, a PKCS#11 HSM (SoftHSM2) and AWS KMS (moto). The keyring's cache of
//! unwrapped intermediate keys is what should make them equal; the `uncached` rows ask the
//! backend on every page, to show what the cache saves.
//!
//! `(source scripts/test-servers.sh; cargo bench -p quire-benches --bench vault)` — the script
//! starts moto and SoftHSM2; a backend whose variables are missing is skipped, saying so.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quire_benches::{ingest_and_forget, noise};
use quire_pipeline::vault::{
    AwsKms, AwsKmsOptions, FileBackend, KeyBackend, Keyring, Pkcs11, Pkcs11Options,
};
use quire_pipeline::{hash, Pipeline, PipelineConfig};
use quire_storage::Store;

const PAGE: usize = 1024 * 1024;

fn hsm() -> Option<Box<dyn KeyBackend>> {
    let module = std::env::var("QUIRE_TEST_PKCS11_MODULE").ok()?;
    let label = format!("bench-{}", std::process::id());
    let made = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label])
        .args(["--so-pin", "11223344", "--pin", "44332211"])
        .output()
        .ok()?;
    if !made.status.success() {
        return None;
    }
    let options = Pkcs11Options {
        module: module.into(),
        token_label: label,
        pin: "44332211".to_string().into(),
    };
    Some(Box::new(Pkcs11::open(&options).expect("the HSM opens")))
}

fn kms() -> Option<Box<dyn KeyBackend>> {
    let endpoint = std::env::var("QUIRE_TEST_KMS_ENDPOINT").ok()?;
    Some(Box::new(
        AwsKms::new(AwsKmsOptions {
            endpoint,
            region: "eu-central-1".into(),
            access_key_id: "quire-test".into(),
            secret_access_key: "quire-test-secret".to_string().into(),
            session_token: None,
        })
        .expect("the KMS client starts"),
    ))
}

fn file() -> Option<Box<dyn KeyBackend>> {
    Some(Box::new(FileBackend::new(
        quire_codecs::sealed::SecretKey::generate(),
    )))
}

/// How to make a backend (`None`: its test server is not running).
type MakeBackend = fn() -> Option<Box<dyn KeyBackend>>;

fn backends() -> [(&'static str, MakeBackend); 3] {
    [("file", file), ("pkcs11", hsm), ("aws-kms", kms)]
}

fn bench_vaults(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = Bytes::from(noise(PAGE));
    let digest = hash::sha256(&data);
    let mut g = c.benchmark_group("vault_ingest_1MiB");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(PAGE as u64));
    for cached in [true, false] {
        for (name, make) in backends() {
            let Some(backend) = make() else {
                eprintln!("vault bench: skipping {name} (run under scripts/test-servers.sh)");
                continue;
            };
            let dir = tempfile::tempdir().unwrap();
            let bounds = quire_key_cache_bounds(cached);
            let keyring = Keyring::open_bounded(dir.path(), backend, bounds).unwrap();
            let spool = quire_pipeline::Spool::open(
                &dir.path().join("spool"),
                &dir.path().join("spool-keys"),
                quire_pipeline::SpoolConfig::default(),
            )
            .unwrap();
            let store = Store::memory();
            let pipeline = Pipeline::new(
                store.clone(),
                Arc::new(keyring),
                Arc::new(spool),
                PipelineConfig::default(),
            );
            let _delivery = {
                let _guard = rt.enter();
                pipeline.spawn_delivery()
            };
            let id = if cached {
                name.to_string()
            } else {
                format!("{name}_uncached")
            };
            let mut n = 0u32;
            g.bench_function(BenchmarkId::from_parameter(&id), |b| {
                b.iter(|| {
                    n += 1;
                    let job = format!("{id}-{n}");
                    rt.block_on(ingest_and_forget(
                        &pipeline,
                        &store,
                        &job,
                        data.clone(),
                        digest,
                    ))
                })
            });
        }
    }
    g.finish();
}

/// The keyring's defaults, or a cache that serves every key once (every page unwraps).
fn quire_key_cache_bounds(cached: bool) -> quire_pipeline::vault::CacheBounds {
    if cached {
        quire_pipeline::vault::DEFAULT_CACHE_BOUNDS
    } else {
        quire_pipeline::vault::CacheBounds {
            max_age: u64::MAX,
            max_uses: 1,
        }
    }
}

criterion_group!(benches, bench_vaults);
criterion_main!(benches);
