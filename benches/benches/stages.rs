//! Throughput of each ingest stage and of the whole in-process pipeline (no network).
//!
//! `cargo bench -p quire-benches` ; compare seal/open against the raw AES-256-GCM line,
//! measured in the same run, for the ratio to the ceiling.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use quire_benches::{bitmap_like, ingest_and_forget, jpeg_like, noise};
use quire_codecs::sealed::{ChunkCipher, Compression, KekRef, SecretKey};
use quire_pipeline::{compress, hash, Keyring, Pipeline, PipelineConfig};
use quire_storage::Store;

const MIB: usize = 1024 * 1024;

fn kek_ref() -> KekRef {
    KekRef {
        tenant: "bench".into(),
        kek_id: "tenant".into(),
        version: 1,
    }
}

fn bench_hash(c: &mut Criterion) {
    let data = noise(4 * MIB);
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha256", |b| b.iter(|| hash::sha256(&data)));
    g.finish();
}

fn bench_compress(c: &mut Criterion) {
    let mut g = c.benchmark_group("compress");
    for (kind, data) in [
        ("jpeg", jpeg_like(4 * MIB)),
        ("bitmap", bitmap_like(4 * MIB)),
        ("noise", noise(4 * MIB)),
    ] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("choose", kind), &data, |b, d| {
            b.iter(|| compress::choose(d))
        });
        let choice = compress::choose(&data);
        g.bench_with_input(BenchmarkId::new("as_chosen", kind), &data, |b, d| {
            b.iter(|| {
                let mut c = compress::Compressor::new(choice);
                let n = c.push(d).len();
                n + c.finish().len()
            })
        });
    }
    g.finish();
}

fn bench_seal(c: &mut Criterion) {
    let kek = SecretKey::generate();
    let data = noise(8 * MIB);
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(data.len() as u64));
    // The ceiling: raw AES-256-GCM over the same bytes in 1 MiB messages, no framing.
    g.bench_function("aes256gcm_raw_1MiB", |b| {
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let cipher = aes_gcm::Aes256Gcm::new(kek.expose().into());
        let mut buf = data.clone();
        b.iter(|| {
            for (i, chunk) in buf.chunks_mut(MIB).enumerate() {
                let mut n = [0u8; 12];
                n[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let _ = cipher
                    .encrypt_inout_detached(&n.into(), b"", chunk.into())
                    .unwrap();
            }
        })
    });
    // The fastest AES-256-GCM on this machine (ring, as rustls uses it), same shape.
    g.bench_function("ring_raw_1MiB", |b| {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek.expose()).unwrap());
        let mut buf = data.clone();
        b.iter(|| {
            for (i, chunk) in buf.chunks_mut(MIB).enumerate() {
                let mut n = [0u8; 12];
                n[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let _ = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::empty(),
                        chunk,
                    )
                    .unwrap();
            }
        })
    });
    for chunk in [64 * 1024u32, 256 * 1024, 1024 * 1024] {
        let (_, cipher) = ChunkCipher::create(&kek, kek_ref(), "k", Compression::None, chunk);
        // Buffers are prepared outside the timed part (with room for the tag, as the
        // pipeline's chunker prepares them), so only sealing is measured, like the ceiling.
        let fresh = || -> Vec<Vec<u8>> {
            data.chunks(chunk as usize)
                .map(|p| {
                    let mut v = Vec::with_capacity(p.len() + 16);
                    v.extend_from_slice(p);
                    v
                })
                .collect()
        };
        g.bench_with_input(BenchmarkId::new("one_thread", chunk), &chunk, |b, _| {
            b.iter_batched_ref(
                fresh,
                |bufs| {
                    for (i, v) in bufs.iter_mut().enumerate() {
                        cipher.seal_chunk(i as u64, false, v);
                    }
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("rayon", chunk), &chunk, |b, _| {
            use rayon::prelude::*;
            b.iter_batched_ref(
                fresh,
                |bufs| {
                    bufs.par_iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| cipher.seal_chunk(i as u64, false, v));
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn bench_open(c: &mut Criterion) {
    let kek = SecretKey::generate();
    let data = noise(8 * MIB);
    let mut g = c.benchmark_group("open");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for chunk in [64 * 1024u32, 256 * 1024, 1024 * 1024] {
        let (_, cipher) = ChunkCipher::create(&kek, kek_ref(), "k", Compression::None, chunk);
        let sealed: Vec<Vec<u8>> = data
            .chunks(chunk as usize)
            .enumerate()
            .map(|(i, part)| {
                let mut v = part.to_vec();
                cipher.seal_chunk(i as u64, false, &mut v);
                v
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("one_thread", chunk), &chunk, |b, _| {
            b.iter(|| {
                for (i, s) in sealed.iter().enumerate() {
                    let mut v = s.clone();
                    cipher.open_chunk(i as u64, false, &mut v).unwrap();
                }
            })
        });
        g.bench_with_input(BenchmarkId::new("rayon", chunk), &chunk, |b, _| {
            use rayon::prelude::*;
            b.iter(|| {
                sealed.par_iter().enumerate().for_each(|(i, s)| {
                    let mut v = s.clone();
                    cipher.open_chunk(i as u64, false, &mut v).unwrap();
                })
            })
        });
    }
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(Keyring::file(&dir.path().join("vault")).unwrap());
    let spool = quire_pipeline::Spool::open(
        &dir.path().join("spool"),
        &dir.path().join("spool-keys"),
        quire_pipeline::SpoolConfig::default(),
    )
    .unwrap();
    // The whole way to the store: seal, spool, upload, acknowledge (ack = "stored").
    let store = Store::memory();
    let pipeline = Pipeline::new(
        store.clone(),
        vault,
        Arc::new(spool),
        PipelineConfig::default(),
    );
    let _delivery = {
        let _guard = rt.enter();
        pipeline.spawn_delivery()
    };
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    for (kind, data) in [
        ("jpeg_4MiB", jpeg_like(4 * MIB)),
        ("bitmap_4MiB", bitmap_like(4 * MIB)),
        ("noise_4MiB", noise(4 * MIB)),
    ] {
        let data = Bytes::from(data);
        g.throughput(Throughput::Bytes(data.len() as u64));
        // Every iteration stores a new job: criterion calls the routine more than once, so the
        // counter lives outside it (a repeated job id would be answered "already stored").
        let mut n = 0u32;
        g.bench_with_input(
            BenchmarkId::new("ingest_page_memory_store", kind),
            &data,
            |b, data| {
                let digest = hash::sha256(data);
                b.iter(|| {
                    n += 1;
                    let job = format!("{kind}-{n}");
                    rt.block_on(ingest_and_forget(
                        &pipeline,
                        &store,
                        &job,
                        data.clone(),
                        digest,
                    ))
                })
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_hash,
    bench_compress,
    bench_seal,
    bench_open,
    bench_pipeline
);
criterion_main!(benches);
