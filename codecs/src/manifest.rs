//! The job manifest: which pages a job holds, with their sizes and SHA-256 digests.
//!
//! Stored as a sealed object beside the pages, so a job can be verified from the store
//! alone. Two encodings exist; [`Manifest::decode`] reads both and [`Manifest::encode`]
//! writes the newest (`docs/FORMAT.md`, "Manifest"):
//!
//! - **v4**: v3 followed by `token_len:u16 | token`, the RFC 3161 time-stamp token over the
//!   signature (see [`crate::timestamp`]); written only for a time-stamped seal.
//! - **v3**: v2 followed by the job's [`Seal`] (`tenant:string | committed_unix_ms:u64 |
//!   key_id:string | signature:[64]`): the manifest signed at commit (see [`crate::signed`]).
//! - **v2**: `"QMAN" | version:u8 = 2 | job_id:string | entries`, any number of pages up to
//!   [`MAX_PAGES`]; still written for a manifest without a seal.
//! - **v1** (written until v2 existed): one `Manifest` wire frame. Its writer did not respect
//!   the 64 KiB control-frame limit, so v1 manifests beyond it exist in stores; they are read
//!   here at any length the page limit allows.

use bytes::{BufMut, Bytes, BytesMut};

pub use crate::signed::Seal;
use crate::signed::MAX_KEY_ID_LEN;
use crate::wire::{
    self, kind, PageEntry, Reader, WireError, MAX_ID_LEN, MAX_JOB_ID_LEN, MAX_NAME_LEN, MAX_PAGES,
};

/// The first bytes of a v2 or v3 manifest.
pub const MAGIC: &[u8; 4] = b"QMAN";
/// The version [`Manifest::encode`] writes for a signed manifest.
pub const VERSION: u8 = 3;
/// The version written for a signed manifest whose signature is time-stamped.
pub const TIMESTAMPED_VERSION: u8 = 4;
/// The version written for one without a seal.
pub const UNSIGNED_VERSION: u8 = 2;
/// Longest encoding of a manifest any version allows: the most pages with the longest
/// names, and a seal. Anything longer is refused before it is parsed.
pub const MAX_ENCODED_LEN: usize = 5
    + 2
    + MAX_JOB_ID_LEN
    + 4
    + MAX_PAGES as usize * (4 + 2 + MAX_NAME_LEN + 8 + 32)
    + SEAL_MAX_LEN;
const SEAL_MAX_LEN: usize =
    2 + MAX_ID_LEN + 8 + 2 + MAX_KEY_ID_LEN + 64 + 2 + crate::timestamp::MAX_TOKEN_LEN;

/// A committed job's list of pages, ordered by index, and its signature (`None` for jobs
/// committed before manifests were signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub job_id: String,
    pub pages: Vec<PageEntry>,
    pub seal: Option<Seal>,
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

    /// Serialises the manifest in the current version (v3; v2 without a seal).
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
        match &self.seal {
            Some(seal) => {
                b.put_u8(match seal.timestamp {
                    Some(_) => TIMESTAMPED_VERSION,
                    None => VERSION,
                });
                put_body(&mut b, &self.job_id, &self.pages);
                b.put_u16(seal.tenant.len() as u16);
                b.put_slice(seal.tenant.as_bytes());
                b.put_u64(seal.committed_unix_ms);
                b.put_u16(seal.key_id.len() as u16);
                b.put_slice(seal.key_id.as_bytes());
                b.put_slice(&seal.signature);
                if let Some(token) = &seal.timestamp {
                    assert!(token.len() <= crate::timestamp::MAX_TOKEN_LEN);
                    b.put_u16(token.len() as u16);
                    b.put_slice(token);
                }
            }
            None => {
                b.put_u8(UNSIGNED_VERSION);
                put_body(&mut b, &self.job_id, &self.pages);
            }
        }
        b.freeze()
    }

    /// Parses a manifest of any version; rejects anything else.
    pub fn decode(bytes: Bytes) -> Result<Manifest, WireError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(malformed("longer than the most pages a job may hold"));
        }
        let (job_id, pages, seal) = if bytes.starts_with(MAGIC) {
            let mut r = Reader::new(kind::MANIFEST, &bytes[MAGIC.len()..]);
            let version = r.u8()?;
            if ![UNSIGNED_VERSION, VERSION, TIMESTAMPED_VERSION].contains(&version) {
                return Err(malformed("unknown manifest version"));
            }
            let job_id = r.job_id()?;
            let pages = r.entries()?;
            let seal = match version {
                UNSIGNED_VERSION => None,
                _ => Some(Seal {
                    tenant: r.id("tenant")?,
                    committed_unix_ms: r.u64()?,
                    key_id: r.string(MAX_KEY_ID_LEN)?,
                    signature: r.array64()?,
                    timestamp: match version {
                        TIMESTAMPED_VERSION => Some(timestamp_token(&mut r)?),
                        _ => None,
                    },
                }),
            };
            r.finish()?;
            (job_id, pages, seal)
        } else {
            let (job_id, pages) = Self::decode_v1(&bytes)?;
            (job_id, pages, None)
        };
        for (i, p) in pages.iter().enumerate() {
            if p.index as usize != i {
                return Err(malformed("page indexes are not 0..n in order"));
            }
        }
        Ok(Manifest {
            job_id,
            pages,
            seal,
        })
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

/// A v4 seal's time-stamp token: `len:u16 | der`, at most [`crate::timestamp::MAX_TOKEN_LEN`].
fn timestamp_token(r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    let len = usize::from(u16::from_be_bytes(
        r.take(2)?.try_into().expect("two bytes"),
    ));
    if len == 0 || len > crate::timestamp::MAX_TOKEN_LEN {
        return Err(malformed("time-stamp token length out of bounds"));
    }
    Ok(r.take(len)?.to_vec())
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
            seal: None,
        };
        assert_eq!(Manifest::decode(m.encode()).unwrap(), m);
        let bad = Manifest {
            job_id: "j".into(),
            pages: vec![p(1)],
            seal: None,
        };
        assert!(Manifest::decode(bad.encode()).is_err());
    }

    /// A signed manifest (v3) keeps its seal; one without (v2, as written before manifests
    /// were signed) still opens, with none.
    #[test]
    fn a_seal_round_trips_and_unsigned_manifests_still_open() {
        let pages: Vec<PageEntry> = (0..3).map(longest).collect();
        let signer = crate::signed::ManifestSigner::derive(&[9; 32], 4);
        let signed = Manifest {
            job_id: "j".into(),
            seal: Some(signer.sign("acme", "j", &pages, 1_796_000_000_000)),
            pages,
        };
        let bytes = signed.encode();
        assert_eq!(bytes[4], VERSION);
        assert_eq!(Manifest::decode(bytes.clone()).unwrap(), signed);
        for cut in [bytes.len() - 1, bytes.len() - 64] {
            assert!(
                Manifest::decode(bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let unsigned = Manifest {
            seal: None,
            ..signed
        };
        let bytes = unsigned.encode();
        assert_eq!(bytes[4], UNSIGNED_VERSION);
        assert_eq!(Manifest::decode(bytes).unwrap(), unsigned);
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
            seal: Some(Seal {
                tenant: "t".repeat(MAX_ID_LEN),
                committed_unix_ms: u64::MAX,
                key_id: "k".repeat(MAX_KEY_ID_LEN),
                signature: [5; 64],
                timestamp: Some(vec![3; crate::timestamp::MAX_TOKEN_LEN]),
            }),
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
            seal: None,
        };
        assert_eq!(Manifest::decode(v1_bytes(&small)).unwrap(), small);
        let big = Manifest {
            job_id: "old-big".into(),
            pages: (0..3000).map(longest).collect(),
            seal: None,
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
            seal: None,
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
