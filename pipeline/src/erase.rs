//! The last stage, erase: plaintext copies held by the server are wiped as soon as they are
//! no longer needed, rather than left for the allocator to hand out again.
//!
//! Plaintext only ever lives in memory on the server (the spool holds ciphertext only), so
//! erasing plaintext means zeroizing buffers we own exclusively. A buffer still shared
//! elsewhere cannot be wiped safely and is left to its last owner. Sealed copies in the spool
//! are erased cryptographically, by destroying their epoch's key once the store has them:
//! see `crate::spool` and the `quire-erase-tracker` crate, which decides when.

use bytes::Bytes;
use zeroize::Zeroize;

/// Zeroizes `buf` if this is the only reference to its memory; says whether it did.
pub fn wipe_bytes(buf: Bytes) -> bool {
    match buf.try_into_mut() {
        Ok(mut owned) => {
            owned.as_mut().zeroize();
            true
        }
        Err(_) => false,
    }
}

/// Zeroizes a vector's contents, including spare capacity.
pub fn wipe_vec(mut v: Vec<u8>) {
    v.zeroize();
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_bytes_are_wiped_shared_ones_left_alone() {
        assert!(super::wipe_bytes(bytes::Bytes::from(vec![9u8; 64])));
        let shared = bytes::Bytes::from(vec![1u8; 8]);
        assert!(!super::wipe_bytes(shared.clone()));
        assert_eq!(&shared[..], &[1u8; 8]);
    }
}
