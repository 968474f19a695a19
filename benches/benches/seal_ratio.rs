//! Prints Quire's sealing and opening throughput as a ratio to the fastest AES-256-GCM on this
//! machine (ring, raw, same buffers), both measured in this run, plus the two-thread scaling.
//! `cargo bench -p quire-benches --bench seal_ratio`

use std::time::Instant;

use quire_benches::noise;
use quire_codecs::sealed::{ChunkCipher, Compression, KekRef, SecretKey, DEFAULT_CHUNK_SIZE};
use rayon::prelude::*;

const TOTAL: usize = 64 * 1024 * 1024;
const ROUNDS: usize = 12;

/// Best-of-`ROUNDS` throughput in GiB/s of `f` over `TOTAL` bytes (best-of resists noise
/// from other tenants of a shared machine).
fn best(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    TOTAL as f64 / best / (1u64 << 30) as f64
}

fn main() {
    let kek = SecretKey::generate();
    let cs = DEFAULT_CHUNK_SIZE as usize;
    let kek_ref = KekRef {
        tenant: "bench".into(),
        kek_id: "tenant".into(),
        version: 1,
    };
    let (_, cipher) =
        ChunkCipher::create(&kek, kek_ref, "k", Compression::None, DEFAULT_CHUNK_SIZE);
    let data = noise(TOTAL);
    let mut bufs: Vec<Vec<u8>> = data
        .chunks(cs)
        .map(|p| {
            let mut v = Vec::with_capacity(cs + 16);
            v.extend_from_slice(p);
            v
        })
        .collect();
    let reset = |bufs: &mut Vec<Vec<u8>>| {
        for (v, p) in bufs.iter_mut().zip(data.chunks(cs)) {
            v.clear();
            v.extend_from_slice(p);
        }
    };

    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, kek.expose()).unwrap(),
    );
    let mut raw = data.clone();
    let ceiling = best(|| {
        for (i, c) in raw.chunks_mut(cs).enumerate() {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let nonce = ring::aead::Nonce::assume_unique_for_key(n);
            let _ = ring_key
                .seal_in_place_separate_tag(nonce, ring::aead::Aad::empty(), c)
                .unwrap();
        }
    });

    let mut one = 0f64;
    for _ in 0..ROUNDS {
        reset(&mut bufs);
        let t = Instant::now();
        for (i, v) in bufs.iter_mut().enumerate() {
            cipher.seal_chunk(i as u64, false, v);
        }
        one = one.max(TOTAL as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64);
    }
    let mut two = 0f64;
    for _ in 0..ROUNDS {
        reset(&mut bufs);
        let t = Instant::now();
        bufs.par_iter_mut()
            .enumerate()
            .for_each(|(i, v)| cipher.seal_chunk(i as u64, false, v));
        two = two.max(TOTAL as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64);
    }
    let sealed = bufs.clone();
    let mut open = 0f64;
    for _ in 0..ROUNDS {
        let mut work = sealed.clone();
        let t = Instant::now();
        for (i, v) in work.iter_mut().enumerate() {
            cipher.open_chunk(i as u64, false, v).unwrap();
        }
        open = open.max(TOTAL as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64);
    }
    println!(
        "AES-256-GCM ceiling (ring, raw, {} KiB messages): {ceiling:.2} GiB/s",
        cs / 1024
    );
    println!(
        "Quire seal, 1 thread:  {one:.2} GiB/s = {:.1} % of the ceiling",
        one / ceiling * 100.0
    );
    println!(
        "Quire open, 1 thread:  {open:.2} GiB/s = {:.1} % of the ceiling",
        open / ceiling * 100.0
    );
    println!(
        "Quire seal, {} threads: {two:.2} GiB/s = {:.2}x one thread",
        rayon::current_num_threads(),
        two / one
    );
}
