//! Stage 3, compress: zstd for pages that shrink, nothing for those that do not.
//!
//! Scans are mostly JPEG, CCITT G4 or already-deflated PNG, which zstd cannot shrink: trying
//! would burn hundreds of MB/s for nothing. The choice is made once per page from a cheap
//! sample (known compressed formats by magic number; otherwise a trial compression of the
//! first 16 KiB) and recorded in the sealed object's header.

use std::io::Write;

use quire_codecs::sealed::Compression;

/// Bytes looked at to decide: enough for a stable estimate, small enough that the trial
/// costs well under 2 % of an incompressible page's processing (see the `compress` bench).
pub const SAMPLE_LEN: usize = 16 * 1024;
/// zstd level: level 1 is the fast end; higher levels cost CPU the ingest tier needs.
pub const ZSTD_LEVEL: i32 = 1;
/// Compress only if the sample shrinks to at most this fraction (in percent).
pub const WORTHWHILE_PERCENT: usize = 90;

const COMPRESSED_MAGICS: &[&[u8]] = &[
    &[0xff, 0xd8, 0xff],                   // JPEG
    &[0x89, b'P', b'N', b'G'],             // PNG
    &[0x00, 0x00, 0x00, 0x0c, b'j', b'P'], // JPEG 2000
    &[0xff, 0x4f, 0xff, 0x51],             // JPEG 2000 codestream
    b"GIF8",
    b"PK\x03\x04",             // zip, docx, ...
    &[0x1f, 0x8b],             // gzip
    &[0x28, 0xb5, 0x2f, 0xfd], // zstd
    b"RIFF",                   // WebP
];

/// Chooses the compression for a page from its first bytes.
pub fn choose(sample: &[u8]) -> Compression {
    if sample.len() < 64 {
        return Compression::None;
    }
    if COMPRESSED_MAGICS.iter().any(|m| sample.starts_with(m)) {
        return Compression::None;
    }
    let sample = &sample[..sample.len().min(SAMPLE_LEN)];
    match zstd::bulk::compress(sample, ZSTD_LEVEL) {
        Ok(c) if c.len() * 100 <= sample.len() * WORTHWHILE_PERCENT => Compression::Zstd,
        _ => Compression::None,
    }
}

/// A streaming compressor for one page (or a pass-through when compression is off).
pub enum Compressor {
    None,
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compressor::None => "Compressor::None",
            Compressor::Zstd(_) => "Compressor::Zstd",
        })
    }
}

impl Compressor {
    pub fn new(c: Compression) -> Compressor {
        match c {
            Compression::None => Compressor::None,
            Compression::Zstd => Compressor::Zstd(Box::new(
                zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)
                    .expect("zstd encoder allocation"),
            )),
        }
    }

    /// Feeds plaintext; returns whatever compressed output is ready (possibly nothing).
    /// With compression off the input is returned as is.
    pub fn push<'a>(&mut self, data: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self {
            Compressor::None => std::borrow::Cow::Borrowed(data),
            Compressor::Zstd(e) => {
                e.write_all(data).expect("writing to a Vec cannot fail");
                std::borrow::Cow::Owned(std::mem::take(e.get_mut()))
            }
        }
    }

    /// Ends the stream; returns the remaining output.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Compressor::None => Vec::new(),
            Compressor::Zstd(e) => e.finish().expect("writing to a Vec cannot fail"),
        }
    }
}

/// The inverse of [`Compressor`], used when reading pages back.
pub enum Decompressor {
    None,
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decompressor")
    }
}

impl Decompressor {
    pub fn new(c: Compression) -> Decompressor {
        match c {
            Compression::None => Decompressor::None,
            Compression::Zstd => Decompressor::Zstd(Box::new(
                zstd::stream::write::Decoder::new(Vec::new()).expect("zstd decoder allocation"),
            )),
        }
    }

    /// Feeds compressed bytes; returns the plaintext ready so far.
    pub fn push(&mut self, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            Decompressor::None => Ok(data),
            Decompressor::Zstd(d) => {
                d.write_all(&data)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }

    /// Checks the compressed stream ended cleanly; returns any last plaintext.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Decompressor::None => Ok(Vec::new()),
            Decompressor::Zstd(mut d) => {
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_is_not_compressed_text_is() {
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0];
        jpeg.resize(10_000, 0);
        assert_eq!(choose(&jpeg), Compression::None);
        let text = b"Lieferschein ".repeat(1000);
        assert_eq!(choose(&text), Compression::Zstd);
        let mut noise = vec![0u8; 70_000];
        fastrand::Rng::with_seed(12345).fill(&mut noise);
        assert_eq!(choose(&noise), Compression::None);
    }

    #[test]
    fn streaming_round_trip() {
        let text = b"page of a scanned invoice ".repeat(20_000);
        let mut c = Compressor::new(Compression::Zstd);
        let mut packed = Vec::new();
        for part in text.chunks(7777) {
            packed.extend_from_slice(&c.push(part));
        }
        packed.extend(c.finish());
        assert!(packed.len() < text.len() / 10);
        let mut d = Decompressor::new(Compression::Zstd);
        let mut out = Vec::new();
        for part in packed.chunks(1000) {
            out.extend(d.push(part.to_vec()).unwrap());
        }
        out.extend(d.finish().unwrap());
        assert_eq!(out, text);
    }
}
