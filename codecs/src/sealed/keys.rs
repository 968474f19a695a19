//! Keys: the 256-bit secret key type, and wrapping a data key under a key-encryption key.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::*;

/// A 256-bit secret key (data key or key-encryption key), wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Draws a fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the OS random source failed");
        SecretKey(k)
    }
    /// Wraps existing key bytes (e.g. read from a vault).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }
    /// The raw key bytes. Handle with care: never log them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Which key-encryption key wrapped an object's data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekRef {
    pub tenant: String,
    pub kek_id: String,
    pub version: u32,
}

impl KekRef {
    fn wrap_aad(&self) -> Vec<u8> {
        let mut aad =
            Vec::with_capacity(LABEL_WRAP.len() + 2 + self.tenant.len() + self.kek_id.len() + 4);
        aad.extend_from_slice(LABEL_WRAP);
        aad.push(self.tenant.len() as u8);
        aad.extend_from_slice(self.tenant.as_bytes());
        aad.push(self.kek_id.len() as u8);
        aad.extend_from_slice(self.kek_id.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad
    }
}

/// Wraps `dek` under `kek` with a random nonce, bound to `kek_ref` as associated data.
pub fn wrap_key(kek: &SecretKey, kek_ref: &KekRef, dek: &SecretKey) -> [u8; WRAPPED_KEY_LEN] {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("the OS random source failed");
    dangerous_wrap_key_with_nonce(kek, kek_ref, dek, nonce)
}

/// [`wrap_key`] with a caller-chosen nonce, for reproducible test vectors only. Reusing a
/// nonce under one KEK breaks AES-GCM; production code must call [`wrap_key`].
pub fn dangerous_wrap_key_with_nonce(
    kek: &SecretKey,
    kek_ref: &KekRef,
    dek: &SecretKey,
    nonce: [u8; 12],
) -> [u8; WRAPPED_KEY_LEN] {
    let mut out = [0u8; WRAPPED_KEY_LEN];
    out[..12].copy_from_slice(&nonce);
    out[12..44].copy_from_slice(dek.expose());
    let cipher = Aes256Gcm::new(kek.expose().into());
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::from(nonce),
            &kek_ref.wrap_aad(),
            (&mut out[12..44]).into(),
        )
        .expect("32 bytes are within AES-GCM limits");
    out[44..].copy_from_slice(&tag);
    out
}

/// Reverses [`wrap_key`]; fails if the KEK, the reference or the wrapped bytes differ.
pub fn unwrap_key(
    kek: &SecretKey,
    kek_ref: &KekRef,
    wrapped: &[u8; WRAPPED_KEY_LEN],
) -> Result<SecretKey, SealError> {
    let nonce = Nonce::from(<[u8; 12]>::try_from(&wrapped[..12]).unwrap());
    let tag = Tag::from(<[u8; 16]>::try_from(&wrapped[44..]).unwrap());
    let mut dek = Zeroizing::new([0u8; 32]);
    dek.copy_from_slice(&wrapped[12..44]);
    let cipher = Aes256Gcm::new(kek.expose().into());
    cipher
        .decrypt_inout_detached(&nonce, &kek_ref.wrap_aad(), (&mut dek[..]).into(), &tag)
        .map_err(|_| SealError::UnwrapFailed)?;
    Ok(SecretKey::from_bytes(*dek))
}
