//! One audit record: its JSON line, and the hash that chains it to the one before.
//!
//! The hash is taken over a binary encoding of the fields (length-prefixed, fixed order), not
//! over the JSON text, so that any JSON writer or reader — the Python verifier included —
//! arrives at the same digest. docs/AUDIT.md specifies it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The record format this version writes (`"v": 2`). Lines without `v` are the unchained
/// records earlier versions wrote.
pub const RECORD_VERSION: u32 = 2;

/// Domain separation of the record hash.
pub const RECORD_DOMAIN: &[u8] = b"quire audit record v2\0";

/// The `prev` of a chain's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Longest line a reader accepts; records are far shorter (reasons and names are bounded).
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// A chained audit record, as one JSON line of `audit.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Always [`RECORD_VERSION`].
    pub v: u32,
    /// Position in the chain, from 1.
    pub seq: u64,
    pub ts_unix_ms: u64,
    /// Who acted: a device id, a source address for failed logins, or `quire`.
    pub actor: String,
    pub role: String,
    pub action: String,
    /// The tenant, which is also the chain; empty for service-level events.
    pub tenant: String,
    pub detail: String,
    /// `started`, `ok`, or `refused: …`.
    pub outcome: String,
    #[serde(with = "hex_bytes")]
    pub prev: [u8; 32],
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

/// The fields of a record before it is placed in a chain.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub actor: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub tenant: &'a str,
    pub detail: &'a str,
    pub outcome: &'a str,
}

impl Record {
    /// Places `entry` after `prev` (the chain's last hash, or [`GENESIS`]) at `seq`.
    pub fn chain(entry: Entry<'_>, seq: u64, ts_unix_ms: u64, prev: [u8; 32]) -> Record {
        let mut r = Record {
            v: RECORD_VERSION,
            seq,
            ts_unix_ms,
            actor: entry.actor.to_string(),
            role: entry.role.to_string(),
            action: entry.action.to_string(),
            tenant: entry.tenant.to_string(),
            detail: entry.detail.to_string(),
            outcome: entry.outcome.to_string(),
            prev,
            hash: [0; 32],
        };
        r.hash = r.computed_hash();
        r
    }

    /// The hash the record's fields give (compare with `hash` to detect an edit).
    pub fn computed_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(RECORD_DOMAIN);
        h.update(self.seq.to_be_bytes());
        h.update(self.ts_unix_ms.to_be_bytes());
        for field in [
            &self.tenant,
            &self.actor,
            &self.role,
            &self.action,
            &self.detail,
            &self.outcome,
        ] {
            h.update((field.len() as u32).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.update(self.prev);
        h.finalize().into()
    }

    /// The JSON line, without its newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record serialises")
    }
}

/// A record as earlier versions wrote it: no sequence, no hash.
#[derive(Debug, Deserialize)]
struct Legacy {
    ts_unix_ms: u64,
    tenant: String,
}

/// What one line of an audit log is.
#[derive(Debug)]
pub enum Line {
    Chained(Box<Record>),
    /// Written by a version before chaining, for this tenant.
    Legacy {
        tenant: String,
        ts_unix_ms: u64,
    },
}

/// Parses one line (without its newline). The error says what is wrong with it.
pub fn parse_line(line: &[u8]) -> Result<Line, String> {
    if line.len() > MAX_LINE_LEN {
        return Err(format!("line longer than {MAX_LINE_LEN} bytes"));
    }
    #[derive(Deserialize)]
    struct Probe {
        v: Option<u32>,
    }
    let probe: Probe =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON record: {e}"))?;
    match probe.v {
        None => {
            let l: Legacy =
                serde_json::from_slice(line).map_err(|e| format!("not an audit record: {e}"))?;
            Ok(Line::Legacy {
                tenant: l.tenant,
                ts_unix_ms: l.ts_unix_ms,
            })
        }
        Some(RECORD_VERSION) => serde_json::from_slice(line)
            .map(|r| Line::Chained(Box::new(r)))
            .map_err(|e| format!("malformed record: {e}")),
        Some(v) => Err(format!(
            "record format {v} is newer than this version of Quire understands; upgrade Quire"
        )),
    }
}

/// A fixed-size byte array as lowercase hex digits.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = <&str>::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            actor: "admin",
            role: "service-admin",
            action: "device.create",
            tenant: "acme",
            detail: "device=scanner-1 role=device",
            outcome: "started",
        }
    }

    #[test]
    fn a_record_round_trips_and_its_hash_covers_every_field() {
        let r = Record::chain(entry(), 7, 1_700_000_000_123, [9; 32]);
        let back = match parse_line(r.to_line().as_bytes()).unwrap() {
            Line::Chained(back) => back,
            other => panic!("{other:?}"),
        };
        assert_eq!(*back, r);
        assert_eq!(back.computed_hash(), r.hash);
        let edits: [fn(&mut Record); 9] = [
            |r| r.seq += 1,
            |r| r.ts_unix_ms += 1,
            |r| r.actor.push('x'),
            |r| r.role.push('x'),
            |r| r.action.push('x'),
            |r| r.tenant.push('x'),
            |r| r.detail.push('x'),
            |r| r.outcome.push('x'),
            |r| r.prev[0] ^= 1,
        ];
        for edit in edits {
            let mut changed = r.clone();
            edit(&mut changed);
            assert_ne!(changed.computed_hash(), r.hash);
        }
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_hash() {
        let a = Record::chain(
            Entry {
                detail: "ab",
                outcome: "c",
                ..entry()
            },
            1,
            0,
            GENESIS,
        );
        let b = Record::chain(
            Entry {
                detail: "a",
                outcome: "bc",
                ..entry()
            },
            1,
            0,
            GENESIS,
        );
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn legacy_lines_are_told_apart_and_unknown_formats_named() {
        let legacy = br#"{"ts_unix_ms":1,"actor":"a","role":"r","action":"x","tenant":"acme","detail":"","outcome":"ok"}"#;
        assert!(
            matches!(parse_line(legacy).unwrap(), Line::Legacy { tenant, .. } if tenant == "acme")
        );
        let future = br#"{"v":3,"seq":1}"#;
        assert!(parse_line(future).unwrap_err().contains("newer"));
        assert!(parse_line(b"{not json").is_err());
        let mut extra: serde_json::Value =
            serde_json::from_str(&Record::chain(entry(), 1, 0, GENESIS).to_line()).unwrap();
        extra["smuggled"] = "x".into();
        assert!(parse_line(extra.to_string().as_bytes()).is_err());
        assert!(parse_line(&vec![b' '; MAX_LINE_LEN + 1]).is_err());
    }
}
