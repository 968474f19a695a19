//! Checkpoints: a chain's head, signed, kept where the audit log's host cannot rewrite it.
//!
//! Every record's hash covers the one before, so a signature over the newest hash vouches
//! for the whole chain up to it. The server writes each checkpoint to the tenant's object
//! store as a write-once object: whoever rewrites, truncates or restores `audit.log` cannot
//! make it agree with the checkpoints again without the signing key.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use quire_codecs::signed::DerivedSigningKey;
use serde::{Deserialize, Serialize};

use crate::record::hex_bytes;

/// The checkpoint format this version writes.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Domain separation of the signed message.
pub const CHECKPOINT_DOMAIN: &[u8] = b"quire audit checkpoint v1\0";

/// HKDF `info` that turns a vault key into the audit signing key.
pub const SIGNING_KEY_INFO: &[u8] = b"quire audit signing key v1";

/// Largest checkpoint object a reader accepts.
pub const MAX_CHECKPOINT_LEN: usize = 4096;

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub v: u32,
    /// The chain: a tenant, or empty for service-level events.
    pub tenant: String,
    /// The last record covered.
    pub seq: u64,
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
    pub signed_unix_ms: u64,
    /// Which signing key: `audit-<vault key version>`.
    pub key_id: String,
    /// The signer's public key, for convenience: verifiers use the one they trust.
    #[serde(with = "hex_bytes")]
    pub public_key: [u8; 32],
    #[serde(with = "hex_bytes")]
    pub signature: [u8; 64],
}

/// The object key of a chain's checkpoint at `seq`: outside `tenants/`, so that deleting a
/// tenant's documents never touches its trail, and zero-padded so listings sort by `seq`.
pub fn object_key(tenant: &str, seq: u64) -> String {
    format!("{}{seq:020}.json", object_prefix(tenant))
}

/// Where a chain's checkpoints are listed.
pub fn object_prefix(tenant: &str) -> String {
    if tenant.is_empty() {
        "audit/service/".to_string()
    } else {
        format!("audit/tenant/{tenant}/")
    }
}

/// The exact bytes a checkpoint's signature covers.
pub fn signed_message(
    tenant: &str,
    seq: u64,
    hash: &[u8; 32],
    signed_unix_ms: u64,
    key_id: &str,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 64 + tenant.len() + key_id.len());
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(&(tenant.len() as u32).to_be_bytes());
    m.extend_from_slice(tenant.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&signed_unix_ms.to_be_bytes());
    m.extend_from_slice(&(key_id.len() as u32).to_be_bytes());
    m.extend_from_slice(key_id.as_bytes());
    m
}

/// The server's audit signing key, derived from a key the vault holds (so it is as well
/// kept as the tenants' keys: in a KMS or HSM where one is configured). Zeroized on drop.
#[derive(Debug)]
pub struct AuditSigner(DerivedSigningKey);

impl AuditSigner {
    /// Derives the signing key of vault key `version` from its bytes (HKDF-SHA-256).
    pub fn derive(vault_key: &[u8; 32], version: u32) -> AuditSigner {
        AuditSigner(DerivedSigningKey::derive(
            vault_key,
            SIGNING_KEY_INFO,
            key_id(version),
        ))
    }

    pub fn key_id(&self) -> &str {
        self.0.key_id()
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.public_key()
    }

    /// Signs the head `(seq, hash)` of `tenant`'s chain.
    pub fn sign(&self, tenant: &str, seq: u64, hash: [u8; 32], now_unix_ms: u64) -> Checkpoint {
        let message = signed_message(tenant, seq, &hash, now_unix_ms, self.key_id());
        Checkpoint {
            v: CHECKPOINT_VERSION,
            tenant: tenant.to_string(),
            seq,
            hash,
            signed_unix_ms: now_unix_ms,
            key_id: self.key_id().to_string(),
            public_key: self.public_key(),
            signature: self.0.sign(&message),
        }
    }
}

/// The key id of vault key `version`.
pub fn key_id(version: u32) -> String {
    format!("audit-{version}")
}

/// The vault key version a key id names.
pub fn key_version(key_id: &str) -> Option<u32> {
    key_id.strip_prefix("audit-")?.parse().ok()
}

impl Checkpoint {
    /// Parses a checkpoint object (bounded).
    pub fn parse(bytes: &[u8]) -> Result<Checkpoint, String> {
        if bytes.len() > MAX_CHECKPOINT_LEN {
            return Err(format!("larger than {MAX_CHECKPOINT_LEN} bytes"));
        }
        let c: Checkpoint =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed checkpoint: {e}"))?;
        if c.v != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint format {} is not one this version of Quire understands",
                c.v
            ));
        }
        Ok(c)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a checkpoint serialises")
    }

    /// Checks the signature against `trusted` (not the key the checkpoint carries).
    pub fn verify(&self, trusted: &[u8; 32]) -> Result<(), String> {
        let key = VerifyingKey::from_bytes(trusted)
            .map_err(|_| "the trusted public key is not a valid Ed25519 key".to_string())?;
        let message = signed_message(
            &self.tenant,
            self.seq,
            &self.hash,
            self.signed_unix_ms,
            &self.key_id,
        );
        key.verify(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| {
                format!(
                    "the signature of the checkpoint at record {} does not verify under {}: it was forged or damaged",
                    self.seq, self.key_id
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_under_its_key_only_and_covers_every_field() {
        let signer = AuditSigner::derive(&[7; 32], 1);
        let other = AuditSigner::derive(&[8; 32], 1);
        assert_ne!(signer.public_key(), other.public_key());
        let c = signer.sign("acme", 42, [3; 32], 1_700_000_000_000);
        let back = Checkpoint::parse(c.to_json().as_bytes()).unwrap();
        assert_eq!(back, c);
        c.verify(&signer.public_key()).unwrap();
        assert!(c.verify(&other.public_key()).is_err());
        let edits: [fn(&mut Checkpoint); 5] = [
            |c| c.tenant.push('x'),
            |c| c.seq += 1,
            |c| c.hash[0] ^= 1,
            |c| c.signed_unix_ms += 1,
            |c| c.key_id = "audit-2".into(),
        ];
        for edit in edits {
            let mut changed = c.clone();
            edit(&mut changed);
            assert!(changed.verify(&signer.public_key()).is_err());
        }
    }

    #[test]
    fn derivation_is_stable_and_keys_are_named_by_version() {
        let a = AuditSigner::derive(&[1; 32], 3);
        let b = AuditSigner::derive(&[1; 32], 3);
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.key_id(), "audit-3");
        assert_eq!(key_version("audit-3"), Some(3));
        assert_eq!(key_version("nope"), None);
        assert!(!format!("{a:?}").contains(&hex::encode([1u8; 32])));
    }

    #[test]
    fn object_keys_sort_by_sequence_and_keep_chains_apart() {
        assert!(object_key("acme", 9) < object_key("acme", 10));
        assert_eq!(
            object_key("acme", 1),
            "audit/tenant/acme/00000000000000000001.json"
        );
        assert!(object_key("", 1).starts_with("audit/service/"));
        assert!(Checkpoint::parse(&vec![b' '; MAX_CHECKPOINT_LEN + 1]).is_err());
    }
}
