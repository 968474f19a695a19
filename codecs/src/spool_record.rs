//! The commit record of a spool record (`<epoch>-<seq>.meta`, sealed under the epoch's spool
//! key; `docs/FORMAT.md`, "Spool records"): where the sealed object inside the record goes and
//! what it must be. JSON, because it is small and read once per record after a crash; parsed
//! here, bounded and validated, because the delivery stage writes to the key it names.

use serde::{Deserialize, Serialize};

use crate::wire::{self, WireError};

/// Longest commit record accepted (its JSON, before sealing).
pub const MAX_LEN: usize = 4096;

/// Where a record goes and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordMeta {
    pub tenant: String,
    pub object_key: String,
    /// SHA-256 and size of the plaintext inside the tenant-sealed object.
    pub plain_sha256: String,
    pub plain_size: u64,
    /// SHA-256 and size of the tenant-sealed object itself: what the store must receive.
    pub sealed_sha256: String,
    pub sealed_size: u64,
}

fn invalid(reason: &'static str) -> WireError {
    WireError::InvalidField {
        field: "spool commit record",
        reason,
    }
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RecordMeta {
    /// The record's JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serialises")
    }

    /// Parses and checks a commit record: the tenant is an identifier, the object key lies
    /// under that tenant's prefix and is a plain path, the digests are SHA-256 in hex (the
    /// sealed one may be empty only while the record is being written, never in a file).
    pub fn decode(bytes: &[u8]) -> Result<RecordMeta, WireError> {
        if bytes.len() > MAX_LEN {
            return Err(invalid("longer than a commit record can be"));
        }
        let m: RecordMeta =
            serde_json::from_slice(bytes).map_err(|_| invalid("not a commit record"))?;
        wire::validate_id("tenant", &m.tenant)?;
        let prefix = format!("tenants/{}/", m.tenant);
        let rest = m
            .object_key
            .strip_prefix(&prefix)
            .ok_or(invalid("object key outside the tenant's prefix"))?;
        if rest.is_empty()
            || rest.len() > 512
            || rest
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            || rest.chars().any(|c| c.is_control() || c == '\\')
        {
            return Err(invalid("object key is not a plain path"));
        }
        if !is_digest(&m.plain_sha256) || !is_digest(&m.sealed_sha256) {
            return Err(invalid("digest is not SHA-256 in hex"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> RecordMeta {
        RecordMeta {
            tenant: "acme".into(),
            object_key: "tenants/acme/jobs/j1/pages/000003".into(),
            plain_sha256: "ab".repeat(32),
            plain_size: 10,
            sealed_sha256: "cd".repeat(32),
            sealed_size: 99,
        }
    }

    #[test]
    fn a_record_round_trips() {
        assert_eq!(RecordMeta::decode(&good().encode()).unwrap(), good());
    }

    #[test]
    fn records_pointing_elsewhere_or_malformed_are_refused() {
        let bad = |f: fn(&mut RecordMeta)| {
            let mut m = good();
            f(&mut m);
            RecordMeta::decode(&m.encode()).is_err()
        };
        assert!(bad(|m| m.tenant = "../x".into()));
        assert!(bad(
            |m| m.object_key = "tenants/beta/jobs/j1/pages/000003".into()
        ));
        assert!(bad(|m| m.object_key = "tenants/acme/../beta/x".into()));
        assert!(bad(|m| m.object_key = "tenants/acme/".into()));
        assert!(bad(|m| m.object_key = "tenants/acme/a//b".into()));
        assert!(bad(|m| m.plain_sha256 = "zz".repeat(32)));
        assert!(bad(|m| m.sealed_sha256 = String::new()));
        assert!(RecordMeta::decode(b"{}").is_err());
        assert!(RecordMeta::decode(&vec![b' '; MAX_LEN + 1]).is_err());
        let mut extra = good().encode();
        extra.pop();
        extra.extend_from_slice(b",\"x\":1}");
        assert!(RecordMeta::decode(&extra).is_err());
    }
}
