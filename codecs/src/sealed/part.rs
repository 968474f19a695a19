//! Whole objects sealed under a vault key whose owner is not a tenant (backups, under
//! `-backup`): the object format's header names a tenant, so these carry a smaller one.
//!
//! `"QBK1" | version:u32 | wrapped data key[60] | nonce[12] | ciphertext | tag[16]`, all
//! big-endian. Each object gets a fresh random data key (so its one nonce is never reused),
//! wrapped under the vault key `(owner, kek_id, version)` with [`wrap_key`]; the body is
//! AES-256-GCM with the header and the object's key as associated data, so a part moved to
//! another key or another backup does not open.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

use super::{unwrap_key, wrap_key, KekRef, SealError, SecretKey, WRAPPED_KEY_LEN};

const MAGIC: &[u8; 4] = b"QBK1";
const HEADER_LEN: usize = 4 + 4 + WRAPPED_KEY_LEN + 12;

/// Seals `plain` as the object `object_key` under the vault key `kek` of `kek_ref`.
pub fn seal_part(kek: &SecretKey, kek_ref: &KekRef, object_key: &str, plain: &[u8]) -> Vec<u8> {
    let dek = SecretKey::generate();
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("the OS random source failed");
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&kek_ref.version.to_be_bytes());
    out.extend_from_slice(&wrap_key(kek, kek_ref, &dek));
    out.extend_from_slice(&nonce);
    let aad = [&out[..], object_key.as_bytes()].concat();
    out.extend_from_slice(plain);
    let tag = Aes256Gcm::new(dek.expose().into())
        .encrypt_inout_detached(&Nonce::from(nonce), &aad, (&mut out[HEADER_LEN..]).into())
        .expect("a part within AES-GCM's limits");
    out.extend_from_slice(&tag);
    out
}

/// The vault key version a sealed part names.
pub fn part_version(sealed: &[u8]) -> Result<u32, SealError> {
    if sealed.len() < HEADER_LEN + 16 || &sealed[..4] != MAGIC {
        return Err(SealError::MalformedHeader("not a sealed backup part"));
    }
    Ok(u32::from_be_bytes(
        sealed[4..8].try_into().expect("4 bytes"),
    ))
}

/// Opens a part sealed by [`seal_part`] with the vault key `kek` of `kek_ref` (the version
/// [`part_version`] named); fails if anything was altered or the key is not the one.
pub fn open_part(
    kek: &SecretKey,
    kek_ref: &KekRef,
    object_key: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    if part_version(sealed)? != kek_ref.version {
        return Err(SealError::UnwrapFailed);
    }
    let wrapped: &[u8; WRAPPED_KEY_LEN] = sealed[8..8 + WRAPPED_KEY_LEN]
        .try_into()
        .expect("the header's length was checked");
    let dek = unwrap_key(kek, kek_ref, wrapped)?;
    let nonce: [u8; 12] = sealed[8 + WRAPPED_KEY_LEN..HEADER_LEN]
        .try_into()
        .expect("12 bytes");
    let aad = [&sealed[..HEADER_LEN], object_key.as_bytes()].concat();
    let (body, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - HEADER_LEN - 16);
    let mut plain = body.to_vec();
    let tag = Tag::from(<[u8; 16]>::try_from(tag).expect("16 bytes"));
    Aes256Gcm::new(dek.expose().into())
        .decrypt_inout_detached(&Nonce::from(nonce), &aad, (&mut plain[..]).into(), &tag)
        .map_err(|_| SealError::ChunkAuthFailed(0))?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek_ref(version: u32) -> KekRef {
        KekRef {
            tenant: "-backup".into(),
            kek_id: "tenant".into(),
            version,
        }
    }

    #[test]
    fn a_part_opens_with_its_key_and_name_only_and_unaltered() {
        let kek = SecretKey::generate();
        let sealed = seal_part(&kek, &kek_ref(3), "backups/1/meta.redb", b"the metadata");
        assert_eq!(part_version(&sealed).unwrap(), 3);
        let plain = open_part(&kek, &kek_ref(3), "backups/1/meta.redb", &sealed).unwrap();
        assert_eq!(plain, b"the metadata");
        assert!(!sealed.windows(8).any(|w| w == b"metadata"));
        let other = SecretKey::generate();
        assert!(open_part(&other, &kek_ref(3), "backups/1/meta.redb", &sealed).is_err());
        assert!(open_part(&kek, &kek_ref(3), "backups/2/meta.redb", &sealed).is_err());
        assert!(open_part(&kek, &kek_ref(4), "backups/1/meta.redb", &sealed).is_err());
        for at in [0, 5, 20, HEADER_LEN - 1, HEADER_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(
                open_part(&kek, &kek_ref(3), "backups/1/meta.redb", &bad).is_err(),
                "{at}"
            );
        }
        assert!(part_version(&sealed[..HEADER_LEN]).is_err());
        // Two seals of the same bytes share nothing but the header's start.
        let again = seal_part(&kek, &kek_ref(3), "backups/1/meta.redb", b"the metadata");
        assert_ne!(sealed[8..], again[8..]);
    }
}
