//! Signed manifests: what proves, outside Quire and without its keys, that a delivered job is
//! the one that was scanned and when it was committed.
//!
//! At commit the server signs the job's tenant, id, commit time and every page's index, name,
//! size and SHA-256 with the tenant's signing key (Ed25519, derived from the tenant's vault
//! key: [`ManifestSigner`]); the [`Seal`] is stored inside the sealed manifest (format v3).
//! A client gets it as a [`SignedManifest`] JSON document, which anyone can check with the
//! tenant's public key (`docs/SIGNING.md` gives the exact bytes signed, and
//! `tests/interop/verify_manifest.py` checks them independently).

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::wire::{validate_page_name, PageEntry, MAX_ID_LEN, MAX_PAGES};

/// The document type a [`SignedManifest`] names.
pub const DOCUMENT_TYPE: &str = "quire-signed-manifest";
/// The document version [`SignedManifest::to_json`] writes for a manifest without a
/// time-stamp (version 1 verifiers read it).
pub const DOCUMENT_VERSION: u32 = 1;
/// The version written with a time-stamp (`timestamp`, the token's DER in hex).
pub const TIMESTAMPED_DOCUMENT_VERSION: u32 = 2;
/// Longest key id a seal carries.
pub const MAX_KEY_ID_LEN: usize = MAX_ID_LEN;
/// Longest signed manifest document read: the most pages with the longest names, escaped.
pub const MAX_DOCUMENT_LEN: usize = 1024 + MAX_PAGES as usize * 1400;

/// What every signed message begins with, so a signature over one kind of thing is never
/// valid for another (the audit checkpoints are signed under their own context).
const CONTEXT: &[u8] = b"quire signed manifest v1";
/// HKDF info deriving a tenant's signing key from its vault key.
const SIGNING_KEY_INFO: &[u8] = b"quire manifest signing key v1";

/// The signature part of a committed job's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// The tenant the job belongs to (signed: a manifest is not valid for another tenant).
    pub tenant: String,
    /// When the server committed the job, in milliseconds since the Unix epoch.
    pub committed_unix_ms: u64,
    /// Which of the tenant's signing keys signed it: `sign-N` for vault key version N.
    pub key_id: String,
    pub signature: [u8; 64],
    /// An RFC 3161 time-stamp token over the SHA-256 of `signature` (DER), where the tenant
    /// names a time-stamp authority (see [`crate::timestamp`]). Not signed: it signs.
    pub timestamp: Option<Vec<u8>>,
}

/// Why a signed manifest does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    #[error("not a signed manifest: {0}")]
    Malformed(String),
    #[error(
        "signed by key {key_id}, which is not among the trusted keys (export them with \
         `quire admin signing-key export`)"
    )]
    UnknownKey { key_id: String },
    #[error(
        "the signature does not match: the manifest (a page's name, size or digest, the job, \
         the tenant or the commit time) was altered after it was signed, or signed by another key"
    )]
    BadSignature,
    #[error("the time-stamp does not belong to this signature: {0}")]
    Timestamp(#[from] crate::timestamp::TimestampError),
}

/// The exact bytes signed: the context and a zero byte; the tenant, the job id and the key
/// id as 4-byte big-endian length and UTF-8 bytes (tenant, job, then the commit time as
/// 8 bytes big-endian, then the key id); the page count as 4 bytes; per page its index
/// (4 bytes), name (length and bytes as above), size (8 bytes) and SHA-256 (32 bytes).
pub fn signed_message(
    tenant: &str,
    job_id: &str,
    committed_unix_ms: u64,
    key_id: &str,
    pages: &[PageEntry],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + pages.len() * 64);
    m.extend_from_slice(CONTEXT);
    m.push(0);
    put_str(&mut m, tenant);
    put_str(&mut m, job_id);
    m.extend_from_slice(&committed_unix_ms.to_be_bytes());
    put_str(&mut m, key_id);
    m.extend_from_slice(&(pages.len() as u32).to_be_bytes());
    for p in pages {
        m.extend_from_slice(&p.index.to_be_bytes());
        put_str(&mut m, &p.name);
        m.extend_from_slice(&p.size.to_be_bytes());
        m.extend_from_slice(&p.sha256);
    }
    m
}

fn put_str(m: &mut Vec<u8>, s: &str) {
    m.extend_from_slice(&(s.len() as u32).to_be_bytes());
    m.extend_from_slice(s.as_bytes());
}

/// The key id of the signing key derived from vault key `version`.
pub fn key_id(version: u32) -> String {
    format!("sign-{version}")
}

/// The vault key version a key id names, if it is one of ours.
pub fn key_version(key_id: &str) -> Option<u32> {
    let n = key_id.strip_prefix("sign-")?;
    match n.parse::<u32>() {
        Ok(v) if v >= 1 && n == v.to_string() => Some(v),
        _ => None,
    }
}

/// An Ed25519 key derived from a vault key (HKDF-SHA-256, no salt) under a purpose's own
/// info string: how Quire makes its signing keys (manifests here, audit checkpoints in
/// `quire-audit`), so they are kept exactly as well as the vault key and never stored.
/// Zeroized on drop; its `Debug` shows the key id and public key only.
pub struct DerivedSigningKey {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for DerivedSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedSigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl DerivedSigningKey {
    pub fn derive(vault_key: &[u8; 32], info: &[u8], key_id: String) -> DerivedSigningKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<sha2::Sha256>::new(None, vault_key)
            .expand(info, seed.as_mut())
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        DerivedSigningKey {
            key: SigningKey::from_bytes(&seed),
            key_id,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// A tenant's manifest signing key, derived from its vault key, so it is kept exactly as
/// well as the keys that encrypt the tenant's pages (wrapped by the master key, a KMS or an
/// HSM).
#[derive(Debug)]
pub struct ManifestSigner(DerivedSigningKey);

impl ManifestSigner {
    /// The signing key of the tenant's vault key `version`.
    pub fn derive(vault_key: &[u8; 32], version: u32) -> ManifestSigner {
        ManifestSigner(DerivedSigningKey::derive(
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

    /// Signs a job of `tenant` committed at `committed_unix_ms`.
    pub fn sign(
        &self,
        tenant: &str,
        job_id: &str,
        pages: &[PageEntry],
        committed_unix_ms: u64,
    ) -> Seal {
        let message = signed_message(tenant, job_id, committed_unix_ms, self.key_id(), pages);
        Seal {
            tenant: tenant.to_string(),
            committed_unix_ms,
            key_id: self.key_id().to_string(),
            signature: self.0.sign(&message),
            timestamp: None,
        }
    }
}

/// A page as the signed manifest document lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPage {
    pub index: u32,
    pub name: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// A committed job's manifest with its signature, as JSON: what `quire get` writes beside
/// the pages and `quire verify` checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    #[serde(rename = "type")]
    pub kind: String,
    pub v: u32,
    pub tenant: String,
    pub job_id: String,
    pub committed_unix_ms: u64,
    pub pages: Vec<SignedPage>,
    pub key_id: String,
    /// The signer's public key, for convenience: a verifier uses the key it trusts.
    pub public_key: String,
    pub signature: String,
    /// The RFC 3161 time-stamp token over SHA-256(signature), DER in lowercase hex (v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl SignedManifest {
    /// The document for `job_id`'s `pages` and their `seal`, naming `public_key` (empty when
    /// the signer's key is not known to the writer).
    pub fn new(
        job_id: &str,
        pages: &[PageEntry],
        seal: &Seal,
        public_key: Option<[u8; 32]>,
    ) -> Self {
        SignedManifest {
            kind: DOCUMENT_TYPE.into(),
            v: match seal.timestamp {
                Some(_) => TIMESTAMPED_DOCUMENT_VERSION,
                None => DOCUMENT_VERSION,
            },
            tenant: seal.tenant.clone(),
            job_id: job_id.into(),
            committed_unix_ms: seal.committed_unix_ms,
            pages: pages
                .iter()
                .map(|p| SignedPage {
                    index: p.index,
                    name: p.name.clone(),
                    size: p.size,
                    sha256: hex::encode(p.sha256),
                })
                .collect(),
            key_id: seal.key_id.clone(),
            public_key: public_key.map(hex::encode).unwrap_or_default(),
            signature: hex::encode(seal.signature),
            timestamp: seal.timestamp.as_ref().map(hex::encode),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest serialises")
    }

    /// Parses a document (bounded by [`MAX_DOCUMENT_LEN`]) and checks its shape: type,
    /// version, page indexes 0..n in order, names a folder can hold, hex fields.
    pub fn parse(bytes: &[u8]) -> Result<SignedManifest, SignedError> {
        let bad = |s: String| SignedError::Malformed(s);
        if bytes.len() > MAX_DOCUMENT_LEN {
            return Err(bad(format!("longer than {MAX_DOCUMENT_LEN} bytes")));
        }
        let doc: SignedManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let version_fits = match doc.v {
            DOCUMENT_VERSION => doc.timestamp.is_none(),
            TIMESTAMPED_DOCUMENT_VERSION => doc.timestamp.is_some(),
            _ => false,
        };
        if doc.kind != DOCUMENT_TYPE || !version_fits {
            return Err(bad(format!("type {:?} version {}", doc.kind, doc.v)));
        }
        if doc.pages.len() > MAX_PAGES as usize || doc.key_id.len() > MAX_KEY_ID_LEN {
            return Err(bad("too many pages, or too long a key id".into()));
        }
        doc.entries()?;
        doc.signature_bytes()?;
        doc.timestamp_token()?;
        Ok(doc)
    }

    /// The time-stamp token's DER, if the document has one.
    fn timestamp_token(&self) -> Result<Option<Vec<u8>>, SignedError> {
        let Some(text) = &self.timestamp else {
            return Ok(None);
        };
        if text.len() > 2 * crate::timestamp::MAX_TOKEN_LEN {
            return Err(crate::timestamp::TimestampError::TooLong.into());
        }
        hex::decode(text)
            .map(Some)
            .map_err(|_| SignedError::Malformed("timestamp is not hex".into()))
    }

    /// What the time-stamp says, once it is shown to be over this document's signature
    /// (`None` without one). The TSA's own signature on it is checked apart, with the TSA's
    /// certificate (docs/SIGNING.md).
    pub fn stamp(&self) -> Result<Option<crate::timestamp::Stamp>, SignedError> {
        let Some(token) = self.timestamp_token()? else {
            return Ok(None);
        };
        let digest: [u8; 32] = sha2::Sha256::digest(self.signature_bytes()?).into();
        Ok(Some(crate::timestamp::check_token(&token, &digest, None)?))
    }

    /// The pages as entries, checked: indexes 0..n in order, valid names, 32-byte digests.
    pub fn entries(&self) -> Result<Vec<PageEntry>, SignedError> {
        let bad = |s: String| SignedError::Malformed(s);
        self.pages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.index as usize != i {
                    return Err(bad(format!("page {i} is listed as {}", p.index)));
                }
                validate_page_name(&p.name).map_err(|e| bad(e.to_string()))?;
                Ok(PageEntry {
                    index: p.index,
                    name: p.name.clone(),
                    size: p.size,
                    sha256: hex32(&p.sha256).map_err(|e| bad(format!("page {i}: {e}")))?,
                })
            })
            .collect()
    }

    fn signature_bytes(&self) -> Result<[u8; 64], SignedError> {
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig)
            .map_err(|_| SignedError::Malformed("signature is not 64 bytes of hex".into()))?;
        Ok(sig)
    }

    /// Checks the signature with the key `trusted` gives for the manifest's key id (never
    /// with the public key the document carries).
    pub fn verify(
        &self,
        trusted: impl Fn(&str) -> Option<[u8; 32]>,
    ) -> Result<Vec<PageEntry>, SignedError> {
        let pages = self.entries()?;
        let key = trusted(&self.key_id).ok_or_else(|| SignedError::UnknownKey {
            key_id: self.key_id.clone(),
        })?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| SignedError::BadSignature)?;
        let message = signed_message(
            &self.tenant,
            &self.job_id,
            self.committed_unix_ms,
            &self.key_id,
            &pages,
        );
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature_bytes()?);
        key.verify_strict(&message, &signature)
            .map_err(|_| SignedError::BadSignature)?;
        self.stamp()?;
        Ok(pages)
    }
}

/// 32 bytes from 64 hex digits.
pub fn hex32(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| "not 32 bytes of hex".to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests;
