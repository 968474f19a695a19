//! The work on a page's bytes: hashing, compression and chunking in order, and a whole
//! small page hashed, compressed and sealed in one go.

use std::time::Instant;

use bytes::Bytes;
use quire_codecs::sealed::{ChunkCipher, Chunker, Compression, PlainChunk, TAG_LEN};
use rayon::prelude::*;

use crate::compress::{self, Compressor};
use crate::erase;
use crate::hash::{self, PageHasher};
use crate::work::{PageFormat, SealClock, StageTimes};
use crate::PipelineError;

/// Where in memory a sealed page starts: see [`Layout::new`].
const OBJECT_ALIGN: usize = quire_storage::DIRECT_WRITE_ALIGN;

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

/// A whole page's compressed plaintext laid out as its sealed object will hold it: the
/// header, then each chunk followed by room for its tag. The chunks are then sealed where they
/// lie, and the buffer is the object: one copy of the page instead of one into chunk buffers
/// and another into the object. Chunk boundaries are [`quire_codecs::sealed::Chunker`]'s: a
/// full chunk is final only if nothing follows it.
struct Layout {
    out: Vec<u8>,
    /// Bytes before the object in `out`.
    padding: usize,
    chunk_size: usize,
    /// Plaintext bytes in the chunk being filled.
    filled: usize,
}

impl Layout {
    fn new(header: &[u8], chunk_size: usize, plain_len: usize) -> Layout {
        let chunks = plain_len / chunk_size.max(1) + 1;
        let len = header.len() + plain_len + chunks * TAG_LEN;
        let mut out = Vec::<u8>::with_capacity(OBJECT_ALIGN + len);
        // The object starts on an aligned address, so a local store writes it past the page
        // cache straight from here (quire_storage's direct writes) instead of copying it.
        let padding = out.as_ptr().align_offset(OBJECT_ALIGN);
        out.resize(padding, 0);
        out.extend_from_slice(header);
        Layout {
            out,
            padding,
            chunk_size,
            filled: 0,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.filled == self.chunk_size {
                // More bytes follow: the full chunk is not the last; leave room for its tag.
                self.out.extend_from_slice(&[0; TAG_LEN]);
                self.filled = 0;
            }
            let n = (self.chunk_size - self.filled).min(data.len());
            self.out.extend_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
        }
    }

    /// The buffer with room for the final chunk's tag, and where the object starts in it.
    fn finish(mut self) -> (Vec<u8>, usize) {
        self.out.extend_from_slice(&[0; TAG_LEN]);
        (self.out, self.padding)
    }
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
    let plain_len = parts.iter().map(|p| p.len()).sum();
    let mut layout = Layout::new(header.encoded(), cipher.chunk_size(), plain_len);
    let (mut hasher, mut compressor) = (PageHasher::new(), Compressor::new(kind.0));
    let mut times = StageTimes::default();
    for data in parts {
        let start = Instant::now();
        hasher.update(&data);
        let hashed = Instant::now();
        layout.push(&compressor.push(&data));
        times.hash += hashed - start;
        times.compress += hashed.elapsed();
        erase::wipe_bytes(data);
    }
    let start = Instant::now();
    let (digest, _) = hasher.finish();
    let hashed = Instant::now();
    layout.push(&compressor.finish());
    let (mut out, object_start) = layout.finish();
    times.hash += hashed - start;
    times.compress += hashed.elapsed();
    if let Err(e) = hash::check_digest(declared, digest) {
        erase::wipe_vec(out);
        return Err(e);
    }
    // Chunks are independent: an idle rayon worker takes some; a busy one leaves them here.
    let sealing = SealClock::default();
    let region = cipher.chunk_size() + TAG_LEN;
    let body = &mut out[object_start + header.encoded().len()..];
    let last = body.len().div_ceil(region) - 1;
    body.par_chunks_mut(region)
        .enumerate()
        .for_each(|(index, chunk)| {
            let start = Instant::now();
            cipher.seal_chunk_in_place(index as u64, index == last, chunk);
            sealing.add(start.elapsed());
        });
    times.seal = sealing.total();
    Ok((Bytes::from(out).slice(object_start..), times, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_codecs::sealed::{open_all, KekRef, SecretKey, MIN_CHUNK_SIZE};

    /// A page sealed whole starts at an aligned address, so a local store writes it past the
    /// page cache without copying it, and it opens to the page.
    #[test]
    fn a_page_sealed_whole_lies_aligned_and_opens_to_the_page() {
        let kek = SecretKey::generate();
        let kek_ref = KekRef {
            tenant: "t".into(),
            kek_id: "k".into(),
            version: 1,
        };
        for len in [0, 1, 5000, 300_001] {
            // Random bytes are stored uncompressed, so what opens is the page itself.
            let mut page = vec![0u8; len];
            getrandom::fill(&mut page).unwrap();
            let mut hasher = PageHasher::new();
            hasher.update(&page);
            let (declared, _) = hasher.finish();
            let parts = vec![
                Bytes::copy_from_slice(&page[..len / 2]),
                Bytes::copy_from_slice(&page[len / 2..]),
            ];
            let (sealed, _, _) = seal_whole_page(
                &kek,
                kek_ref.clone(),
                "t/o",
                MIN_CHUNK_SIZE,
                parts,
                declared,
            )
            .unwrap();
            assert_eq!(sealed.as_ptr().align_offset(OBJECT_ALIGN), 0, "{len} bytes");
            let (_, opened) = open_all(&sealed, "t/o", |_| Some(kek.clone())).unwrap();
            assert!(opened == page, "{len} bytes");
        }
    }
}
