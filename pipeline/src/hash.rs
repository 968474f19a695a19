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
