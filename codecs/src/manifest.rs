//! The job manifest: which pages a job holds, with their sizes and SHA-256 digests.
//!
//! Stored as a sealed object beside the pages, so a job can be verified from the store
//! alone. Two encodings exist; [`Manifest::decode`] reads both and [`Manifest::encode`]
//! writes the newest (`docs/FORMAT.md`, "Manifest"):
//!
//! - **v2**: `"QMAN" | version:u8 = 2 | job_id:string | entries`, any number of pages up to
//!   [`MAX_PAGES`].
//! - **v1** (written until v2 existed): one `Manifest` wire frame. Its writer did not respect
//!   the 64 KiB control-frame limit, so v1 manifests beyond it exist in stores; they are read
//!   here at any length the page limit allows.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{
    self, kind, PageEntry, Reader, WireError, MAX_JOB_ID_LEN, MAX_NAME_LEN, MAX_PAGES,
};

/// The first bytes of a v2 manifest.
pub const MAGIC: &[u8; 4] = b"QMAN";
/// The version [`Manifest::encode`] writes.
pub const VERSION: u8 = 2;
/// Longest encoding of a manifest either version allows: the most pages with the longest
/// names. Anything longer is refused before it is parsed.
pub const MAX_ENCODED_LEN: usize =
    5 + 2 + MAX_JOB_ID_LEN + 4 + MAX_PAGES as usize * (4 + 2 + MAX_NAME_LEN + 8 + 32);

/// A committed job's list of pages, ordered by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub job_id: String,
    pub pages: Vec<PageEntry>,
}

fn malformed(reason: &'static str) -> WireError {
    WireError::InvalidField {
        field: "manifest",
        reason,
    }
}

impl Manifest {
    /// Total plaintext bytes of all pages.
    pub fn total_bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.size).sum()
    }

    /// Serialises the manifest in the current version (v2).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(
            16 + self.job_id.len()
                + self
                    .pages
                    .iter()
                    .map(crate::lists::entry_len)
                    .sum::<usize>(),
        );
        b.put_slice(MAGIC);
        b.put_u8(VERSION);
        put_body(&mut b, &self.job_id, &self.pages);
        b.freeze()
    }

    /// Parses a manifest of any version; rejects anything else.
    pub fn decode(bytes: Bytes) -> Result<Manifest, WireError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(malformed("longer than the most pages a job may hold"));
        }
        let (job_id, pages) = if bytes.starts_with(MAGIC) {
            let mut r = Reader::new(kind::MANIFEST, &bytes[MAGIC.len()..]);
            match r.u8()? {
                VERSION => {}
                _ => return Err(malformed("unknown manifest version")),
            }
            let job_id = r.job_id()?;
            let pages = r.entries()?;
            r.finish()?;
            (job_id, pages)
        } else {
            Self::decode_v1(&bytes)?
        };
        for (i, p) in pages.iter().enumerate() {
            if p.index as usize != i {
                return Err(malformed("page indexes are not 0..n in order"));
            }
        }
        Ok(Manifest { job_id, pages })
    }

    /// A v1 manifest: one `Manifest` frame, header included, of any length.
    fn decode_v1(bytes: &[u8]) -> Result<(String, Vec<PageEntry>), WireError> {
        let mut r = Reader::new(kind::MANIFEST, bytes);
        if r.u8()? != kind::MANIFEST {
            return Err(malformed("not a manifest"));
        }
        let len = r.u32()? as usize;
        let payload = r.take(len)?;
        r.finish()?;
        match wire::decode_control(kind::MANIFEST, payload)? {
            wire::Frame::Manifest { job_id, pages } => Ok((job_id, pages)),
            _ => Err(malformed("not a manifest")),
        }
    }
}

/// The part both versions share: `job_id:string | count:u32 | entry*count`.
fn put_body(b: &mut BytesMut, job_id: &str, pages: &[PageEntry]) {
    b.put_u16(job_id.len() as u16);
    b.put_slice(job_id.as_bytes());
    b.put_u32(pages.len() as u32);
    for p in pages {
        b.put_u32(p.index);
        b.put_u16(p.name.len() as u16);
        b.put_slice(p.name.as_bytes());
        b.put_u64(p.size);
        b.put_slice(&p.sha256);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order_check() {
        let p = |i| PageEntry {
            index: i,
            name: format!("p{i}.jpg"),
            size: 10,
            sha256: [0; 32],
        };
        let m = Manifest {
            job_id: "j".into(),
            pages: vec![p(0), p(1)],
        };
        assert_eq!(Manifest::decode(m.encode()).unwrap(), m);
        let bad = Manifest {
            job_id: "j".into(),
            pages: vec![p(1)],
        };
        assert!(Manifest::decode(bad.encode()).is_err());
    }

    fn longest(i: u32) -> PageEntry {
        PageEntry {
            index: i,
            name: format!("{i:06}-{}", "ü".repeat(124)),
            size: u64::from(i),
            sha256: [7; 32],
        }
    }

    #[test]
    fn the_most_pages_with_the_longest_names_round_trip() {
        let m = Manifest {
            job_id: "j".repeat(MAX_JOB_ID_LEN),
            pages: (0..MAX_PAGES).map(longest).collect(),
        };
        let encoded = m.encode();
        assert_eq!(encoded.len(), MAX_ENCODED_LEN);
        assert_eq!(Manifest::decode(encoded).unwrap(), m);
    }

    /// What a v1 writer stored: the `Manifest` frame's bytes, written without regard to the
    /// control-frame limit (so 3,000 pages made a 150 KB "frame").
    fn v1_bytes(m: &Manifest) -> Bytes {
        let mut payload = BytesMut::new();
        put_body(&mut payload, &m.job_id, &m.pages);
        let mut b = BytesMut::new();
        b.put_u8(0x19);
        b.put_u32(payload.len() as u32);
        b.put_slice(&payload);
        b.freeze()
    }

    #[test]
    fn v1_manifests_still_open_even_beyond_one_frame() {
        let small = Manifest {
            job_id: "old".into(),
            pages: (0..3).map(longest).collect(),
        };
        assert_eq!(Manifest::decode(v1_bytes(&small)).unwrap(), small);
        let big = Manifest {
            job_id: "old-big".into(),
            pages: (0..3000).map(longest).collect(),
        };
        let bytes = v1_bytes(&big);
        assert!(bytes.len() > 64 * 1024);
        assert_eq!(Manifest::decode(bytes).unwrap(), big);
    }

    #[test]
    fn damaged_manifests_are_refused() {
        let m = Manifest {
            job_id: "j".into(),
            pages: (0..4).map(longest).collect(),
        };
        let good = m.encode();
        for cut in [0, 3, 4, 5, 10, good.len() - 1] {
            assert!(Manifest::decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = BytesMut::from(&good[..]);
        longer.put_u8(0);
        assert!(Manifest::decode(longer.freeze()).is_err());
        let mut v3 = BytesMut::from(&good[..]);
        v3[4] = 3;
        assert!(Manifest::decode(v3.freeze()).is_err());
        let mut v1 = BytesMut::from(&v1_bytes(&m)[..]);
        v1[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Manifest::decode(v1.freeze()).is_err());
    }
}
