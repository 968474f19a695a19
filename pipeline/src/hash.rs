//! Stage 2, hash: the SHA-256 of the plaintext, which proves a document was not altered.
//! The client declares the digest up front; the page is stored only if they agree.

use sha2::{Digest, Sha256};

/// Incremental SHA-256 of a page with its running length.
#[derive(Debug, Clone, Default)]
pub struct PageHasher {
    inner: Sha256,
    len: u64,
}

impl PageHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest and length.
    pub fn finish(self) -> ([u8; 32], u64) {
        (self.inner.finalize().into(), self.len)
    }
}

/// SHA-256 of a whole buffer.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The page arrived whole: exactly the byte count the scanner declared.
pub fn check_length(declared: u64, received: u64) -> Result<(), crate::PipelineError> {
    if received == declared {
        Ok(())
    } else {
        Err(crate::PipelineError::Truncated {
            declared,
            got: received,
        })
    }
}

/// The page is the one the scanner declared: its SHA-256 matches.
pub fn check_digest(declared: [u8; 32], actual: [u8; 32]) -> Result<(), crate::PipelineError> {
    if actual == declared {
        Ok(())
    } else {
        Err(crate::PipelineError::IntegrityMismatch {
            declared: hex::encode(declared),
            actual: hex::encode(actual),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_passes_only_whole_and_unaltered() {
        let page = b"a scanned page";
        let digest = sha256(page);
        check_length(14, 14).unwrap();
        assert!(matches!(
            check_length(14, 13),
            Err(crate::PipelineError::Truncated {
                declared: 14,
                got: 13
            })
        ));
        check_digest(digest, sha256(page)).unwrap();
        assert!(matches!(
            check_digest(digest, sha256(b"a scanned pagf")),
            Err(crate::PipelineError::IntegrityMismatch { .. })
        ));
    }
}
