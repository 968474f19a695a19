//! Signed manifests on the client: fetching a job's, fetching the tenant's public keys, and
//! checking that a folder holds exactly the pages a signed manifest lists.
//!
//! What is checked offline needs only the manifest document and a trusted public key
//! (`quire admin signing-key export`), never the server.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use quire_codecs::signed::{self, SignedManifest};
use quire_codecs::wire::{AdminRequest, ErrorCode, Frame, PageEntry};
use sha2::{Digest, Sha256};

use super::{local_err, ClientError, Connection};

/// Public signing keys a verifier trusts, by key id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(HashMap<String, [u8; 32]>);

impl TrustedKeys {
    /// Keys from an export document (`quire admin signing-key export`) or a `sign-N=HEX` line.
    pub fn parse(text: &str) -> Result<TrustedKeys, String> {
        let text = text.trim();
        if let Some((id, hex)) = text.split_once('=').filter(|_| !text.starts_with('{')) {
            signed::key_version(id).ok_or_else(|| format!("{id:?} is not a signing key id"))?;
            let key = signed::hex32(hex.trim()).map_err(|e| format!("key {id}: {e}"))?;
            return Ok(TrustedKeys(HashMap::from([(id.to_string(), key)])));
        }
        let doc: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("neither sign-N=HEX nor an export document: {e}"))?;
        if doc["type"] != "quire-signing-keys" {
            return Err("not a quire-signing-keys document".into());
        }
        let mut keys = HashMap::new();
        for k in doc["keys"].as_array().ok_or("no keys listed")? {
            let id = k["key_id"].as_str().ok_or("a key without key_id")?;
            let hex = k["public_key"].as_str().ok_or("a key without public_key")?;
            keys.insert(
                id.to_string(),
                signed::hex32(hex).map_err(|e| format!("key {id}: {e}"))?,
            );
        }
        Ok(TrustedKeys(keys))
    }

    /// The key a signed manifest names, as the server that sent it derived it from its vault:
    /// enough to tell the manifest was not altered in the store or on the way; to check
    /// without trusting the server, give the tenant's exported keys instead.
    pub fn named_by(doc: &SignedManifest) -> Result<TrustedKeys, String> {
        let key = signed::hex32(&doc.public_key)
            .map_err(|_| format!("the server does not know key {} any more", doc.key_id))?;
        Ok(TrustedKeys(HashMap::from([(doc.key_id.clone(), key)])))
    }

    pub fn get(&self, key_id: &str) -> Option<[u8; 32]> {
        self.0.get(key_id).copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An administrative request answered with one JSON document (Data frames, then Done) of at
/// most `max_len` bytes.
pub async fn document(
    conn: &Connection,
    req: AdminRequest,
    max_len: usize,
) -> Result<Vec<u8>, ClientError> {
    let (mut send, mut reader) = conn.open(&Frame::Admin(req)).await?;
    let _ = send.finish();
    let mut out = Vec::new();
    loop {
        match super::expect_answer(&mut reader).await? {
            Frame::Data(b) => {
                if out.len() + b.len() > max_len {
                    return Err(ClientError::Protocol("the document is too long".into()));
                }
                out.extend_from_slice(&b);
            }
            Frame::Done => return Ok(out),
            f => return Err(ClientError::Protocol(format!("unexpected frame {f:?}"))),
        }
    }
}

/// The job's signed manifest; `None` if the job was committed before manifests were signed,
/// or the server is older than signing (either says so in the error it sends).
pub async fn signed_manifest(
    conn: &Connection,
    tenant: &str,
    job_id: &str,
    reason: &str,
) -> Result<Result<SignedManifest, String>, ClientError> {
    let req = AdminRequest::ManifestGet {
        tenant: tenant.into(),
        job_id: job_id.into(),
        reason: reason.into(),
    };
    match document(conn, req, signed::MAX_DOCUMENT_LEN).await {
        Ok(bytes) => Ok(Ok(
            SignedManifest::parse(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?
        )),
        Err(ClientError::Refused {
            code: ErrorCode::Malformed,
            message,
        }) => Ok(Err(format!(
            "the server does not sign manifests ({message})"
        ))),
        Err(ClientError::Refused {
            code: ErrorCode::NotFound,
            message,
        }) if message.contains("before manifests were signed") => Ok(Err(message)),
        Err(e) => Err(e),
    }
}

/// The tenant's public signing keys as the export document (JSON).
pub async fn export_signing_keys(conn: &Connection, tenant: &str) -> Result<String, ClientError> {
    let bytes = document(
        conn,
        AdminRequest::SigningKeyExport {
            tenant: tenant.into(),
        },
        signed::MAX_DOCUMENT_LEN,
    )
    .await?;
    String::from_utf8(bytes).map_err(|_| ClientError::Protocol("the keys are not UTF-8".into()))
}

/// How a folder compares with a signed manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderReport {
    /// Pages that match (name, size, SHA-256).
    pub matching: usize,
    /// Listed pages absent from the folder.
    pub missing: Vec<String>,
    /// Listed pages present with another size or digest.
    pub different: Vec<String>,
    /// Files in the folder the manifest does not list (not a failure: a manifest file kept
    /// there, or notes added after delivery, are such files).
    pub unlisted: Vec<String>,
}

impl FolderReport {
    /// Every listed page is present and unchanged.
    pub fn proves(&self) -> bool {
        self.missing.is_empty() && self.different.is_empty()
    }
}

/// Checks `dir` against `pages` (already verified against their signature): each file
/// read once, hashed as it is read.
pub fn check_folder(dir: &Path, pages: &[PageEntry]) -> Result<FolderReport, ClientError> {
    let mut report = FolderReport::default();
    for p in pages {
        let path = dir.join(&p.name);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.missing.push(p.name.clone());
                continue;
            }
            Err(e) => return Err(local_err(&path, e)),
        };
        let (digest, size) = hash(&mut file).map_err(|e| local_err(&path, e))?;
        if digest == p.sha256 && size == p.size {
            report.matching += 1;
        } else {
            report.different.push(p.name.clone());
        }
    }
    let listed: std::collections::HashSet<&str> = pages.iter().map(|p| p.name.as_str()).collect();
    for entry in std::fs::read_dir(dir).map_err(|e| local_err(dir, e))? {
        let entry = entry.map_err(|e| local_err(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !listed.contains(name.as_str()) {
            report.unlisted.push(name);
        }
    }
    report.unlisted.sort();
    Ok(report)
}

fn hash(file: &mut std::fs::File) -> std::io::Result<([u8; 32], u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((h.finalize().into(), size));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

/// Reads and parses a signed manifest file.
pub fn read_manifest(path: &Path) -> Result<SignedManifest, ClientError> {
    let meta = std::fs::metadata(path).map_err(|e| local_err(path, e))?;
    if meta.len() > signed::MAX_DOCUMENT_LEN as u64 {
        return Err(ClientError::Local {
            path: path.display().to_string(),
            message: "too long to be a signed manifest".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| local_err(path, e))?;
    SignedManifest::parse(&bytes).map_err(|e| ClientError::Local {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Verifies `doc` with `trusted` keys and checks `dir` against it.
pub fn verify_folder(
    doc: &SignedManifest,
    trusted: &TrustedKeys,
    dir: &Path,
) -> Result<FolderReport, ClientError> {
    let pages = doc.verify(|id| trusted.get(id))?;
    check_folder(dir, &pages)
}
