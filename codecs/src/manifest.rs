//! The job manifest: which pages a job holds, with their sizes and SHA-256 digests.
//!
//! Encoded with the same bounded primitives as a `Manifest` wire frame, then stored as a
//! sealed object beside the pages, so a job can be verified from the store alone.

use bytes::{Bytes, BytesMut};

use crate::wire::{self, Decoder, Frame, PageEntry, WireError};

/// A committed job's list of pages, ordered by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub job_id: String,
    pub pages: Vec<PageEntry>,
}

impl Manifest {
    /// Total plaintext bytes of all pages.
    pub fn total_bytes(&self) -> u64 {
        self.pages.iter().map(|p| p.size).sum()
    }

    /// Serialises the manifest.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        wire::encode(
            &Frame::Manifest {
                job_id: self.job_id.clone(),
                pages: self.pages.clone(),
            },
            &mut b,
        );
        b.freeze()
    }

    /// Parses [`Manifest::encode`]'s output; rejects anything else.
    pub fn decode(bytes: Bytes) -> Result<Manifest, WireError> {
        let mut d = Decoder::new();
        d.feed(bytes);
        let frame = d.next_frame()?.ok_or(WireError::TruncatedFrame)?;
        d.finish()?;
        match frame {
            Frame::Manifest { job_id, pages } => {
                for (i, p) in pages.iter().enumerate() {
                    if p.index as usize != i {
                        return Err(WireError::InvalidField {
                            field: "manifest",
                            reason: "page indexes are not 0..n in order",
                        });
                    }
                }
                Ok(Manifest { job_id, pages })
            }
            _ => Err(WireError::InvalidField {
                field: "manifest",
                reason: "not a manifest",
            }),
        }
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
}
