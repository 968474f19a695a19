//! The work on a page's bytes: hashing, compression and chunking in order, and a whole
//! small page hashed, compressed and sealed in one go.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quire_codecs::sealed::{ChunkCipher, Chunker, Compression, PlainChunk};
use rayon::prelude::*;

use crate::compress::{self, Compressor};
use crate::erase;
use crate::hash::{self, PageHasher};
use crate::work::{PageFormat, SealClock, StageTimes};
use crate::PipelineError;

/// The sequential part of a page's processing: hashing, compression and chunking all carry
/// state from one byte to the next. It moves into a rayon task per batch and back.
pub(super) struct Sequential {
    hasher: PageHasher,
    compressor: Compressor,
    chunker: Chunker,
    times: StageTimes,
}

impl Sequential {
    pub(super) fn new(compression: Compression, chunk_size: u32) -> Self {
        Sequential {
            hasher: PageHasher::new(),
            compressor: Compressor::new(compression),
            chunker: Chunker::new(chunk_size),
            times: StageTimes::default(),
        }
    }

    pub(super) fn absorb(&mut self, batch: Vec<Bytes>) -> Vec<PlainChunk> {
        let mut out = Vec::new();
        for data in batch {
            let start = Instant::now();
            self.hasher.update(&data);
            let hashed = Instant::now();
            let packed = self.compressor.push(&data);
            out.extend(self.chunker.push(&packed));
            self.times.hash += hashed - start;
            self.times.compress += hashed.elapsed();
            drop(packed);
            erase::wipe_bytes(data);
        }
        out
    }

    pub(super) fn finish(self) -> ([u8; 32], u64, Vec<PlainChunk>, StageTimes) {
        let start = Instant::now();
        let (digest, len) = self.hasher.finish();
        let hashed = Instant::now();
        let mut chunker = self.chunker;
        let mut out = chunker.push(&self.compressor.finish());
        out.push(chunker.finish());
        let mut times = self.times;
        times.hash += hashed - start;
        times.compress += hashed.elapsed();
        (digest, len, out, times)
    }
}

/// Wipes received plaintext that will not be processed.
pub(super) fn wipe_all(parts: Vec<Bytes>) {
    for p in parts {
        erase::wipe_bytes(p);
    }
}

/// The compression for a page, chosen from a sample of its first bytes (wiped after use),
/// and the format the sample shows.
pub(super) fn choose_compression(first: &[Bytes]) -> (Compression, PageFormat) {
    let mut sample = Vec::with_capacity(compress::SAMPLE_LEN);
    for part in first {
        let want = compress::SAMPLE_LEN - sample.len();
        sample.extend_from_slice(&part[..want.min(part.len())]);
    }
    let compression = compress::choose(&sample);
    let format = PageFormat::detect(&sample);
    erase::wipe_vec(sample);
    (compression, format)
}

/// Hash, compress and seal a whole page held in memory, on the calling (rayon) thread.
/// Fails, having wiped the plaintext, if the page is not the one the scanner declared.
pub(super) fn seal_whole_page(
    kek: &quire_codecs::sealed::SecretKey,
    kek_ref: quire_codecs::sealed::KekRef,
    object_key: &str,
    chunk_size: u32,
    parts: Vec<Bytes>,
    declared: [u8; 32],
) -> Result<(Bytes, StageTimes, (Compression, PageFormat)), PipelineError> {
    let kind = choose_compression(&parts);
    let (header, cipher) = ChunkCipher::create(kek, kek_ref, object_key, kind.0, chunk_size);
    let mut seq = Sequential::new(kind.0, chunk_size);
    let mut chunks = seq.absorb(parts);
    let (digest, _, tail, mut times) = seq.finish();
    chunks.extend(tail);
    if let Err(e) = hash::check_digest(declared, digest) {
        chunks.into_iter().for_each(|c| erase::wipe_vec(c.data));
        return Err(e);
    }
    // Chunks are independent: an idle rayon worker takes some; a busy one leaves them here.
    let sealing = SealClock::default();
    chunks.par_iter_mut().for_each(|c| {
        let start = Instant::now();
        cipher.seal_chunk(c.index, c.last, &mut c.data);
        sealing.add(start.elapsed());
    });
    times.seal = sealing.total();
    let body: usize = chunks.iter().map(|c| c.data.len()).sum();
    let mut out = BytesMut::with_capacity(header.encoded().len() + body);
    out.extend_from_slice(header.encoded());
    for c in chunks {
        out.extend_from_slice(&c.data);
    }
    Ok((out.freeze(), times, kind))
}
