//! The master-key backend: intermediate keys wrapped (AES-256-GCM) under one 256-bit master
//! key read from a file or `QUIRE_MASTER_KEY`. For development and hosts without a KMS: the
//! master key is in Quire's memory, so keep its file apart from the data (the server refuses
//! one inside the data directory unless told otherwise).
//!
//! The wrapped form is the one every earlier version of Quire wrote into
//! `vault/tenants/<tenant>.kek`, so those files open unchanged.

use std::io::Write;
use std::path::Path;

use quire_codecs::sealed::{unwrap_key, wrap_key, KekRef, SecretKey, WRAPPED_KEY_LEN};
use zeroize::Zeroizing;

use crate::backend::{BackendError, KeyBackend, KeyName};
use crate::VaultError;

/// Wraps tenant keys under a master key held in memory.
pub struct FileBackend {
    master: SecretKey,
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileBackend(<master key redacted>)")
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_hex_key(s: &str) -> Result<SecretKey, VaultError> {
    let s = s.trim();
    let mut k = Zeroizing::new([0u8; 32]);
    if s.len() != 64 {
        return Err(VaultError::BadMasterKey("expected 64 hex digits"));
    }
    hex::decode_to_slice(s, &mut k[..]).map_err(|_| VaultError::BadMasterKey("not hex"))?;
    Ok(SecretKey::from_bytes(*k))
}

/// The reference every tenant key is wrapped under (its `kek_id` names tenant and version).
fn master_ref(name: KeyName<'_>) -> KekRef {
    KekRef {
        tenant: "quire-vault".into(),
        kek_id: format!("{}/{}", name.tenant, name.version),
        version: 1,
    }
}

impl FileBackend {
    /// A backend over an explicit master key.
    pub fn new(master: SecretKey) -> Self {
        FileBackend { master }
    }

    /// Takes the master key from `QUIRE_MASTER_KEY` if set, else from `path`; with neither,
    /// generates it into `path` (mode 0600) unless `sealed` wrapped keys already exist (a new
    /// master key could not open them). Refuses a key file group or others can read.
    pub fn open(path: &Path, sealed: usize) -> Result<FileBackend, VaultError> {
        if let Ok(v) = std::env::var("QUIRE_MASTER_KEY") {
            return Ok(FileBackend::new(parse_hex_key(&Zeroizing::new(v))?));
        }
        Ok(FileBackend::new(master_from_file(path, sealed)?))
    }
}

fn master_from_file(path: &Path, sealed: usize) -> Result<SecretKey, VaultError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !path.exists() {
        if sealed > 0 {
            return Err(VaultError::MasterKeyMissing {
                path: path.to_path_buf(),
                sealed,
            });
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let key = SecretKey::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        let hexed = Zeroizing::new(hex::encode(key.expose()));
        f.write_all(hexed.as_bytes()).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        return Ok(key);
    }
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(VaultError::MasterKeyExposed {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    if meta.len() > 4096 {
        return Err(VaultError::BadMasterKey(
            "the file is far longer than a key",
        ));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
    parse_hex_key(&text)
}

impl KeyBackend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn probe(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn prepare(&self, _name: KeyName<'_>) -> Result<(), BackendError> {
        Ok(())
    }

    fn wrap(&self, name: KeyName<'_>, key: &SecretKey) -> Result<Vec<u8>, BackendError> {
        Ok(wrap_key(&self.master, &master_ref(name), key).to_vec())
    }

    fn unwrap(&self, name: KeyName<'_>, wrapped: &[u8]) -> Result<SecretKey, BackendError> {
        let wrapped: &[u8; WRAPPED_KEY_LEN] =
            wrapped.try_into().map_err(|_| BackendError::Refused)?;
        unwrap_key(&self.master, &master_ref(name), wrapped).map_err(|_| BackendError::Refused)
    }

    fn retire(&self, _name: KeyName<'_>) -> Result<(), BackendError> {
        // One master key serves every tenant: destroying the wrapped copy is all there is.
        Ok(())
    }

    fn shred(&self, _tenant: &str) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_opens_only_under_its_own_name() {
        let b = FileBackend::new(SecretKey::generate());
        let k = SecretKey::generate();
        let name = KeyName {
            tenant: "acme",
            version: 2,
        };
        let w = b.wrap(name, &k).unwrap();
        assert_eq!(b.unwrap(name, &w).unwrap().expose(), k.expose());
        for other in [
            KeyName {
                tenant: "beta",
                version: 2,
            },
            KeyName {
                tenant: "acme",
                version: 1,
            },
        ] {
            assert!(matches!(b.unwrap(other, &w), Err(BackendError::Refused)));
        }
        let stranger = FileBackend::new(SecretKey::generate());
        assert!(matches!(
            stranger.unwrap(name, &w),
            Err(BackendError::Refused)
        ));
        assert!(matches!(
            b.unwrap(name, &w[1..]),
            Err(BackendError::Refused)
        ));
    }
}
