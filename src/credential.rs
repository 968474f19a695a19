//! Credential files: what a scanner or administrator needs to reach the server and prove
//! who it is. TOML, written with mode 0600, holding the device's secret and the server's
//! certificate (so the client trusts exactly that server, with no system roots involved).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use quire_codecs::wire::Role;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Where `serve` writes the development device credential, relative to its data directory.
pub const DEV_DEVICE_CRED: &str = "dev/device.cred";
/// Where `serve` writes the development admin credential, relative to its data directory.
pub const DEV_ADMIN_CRED: &str = "dev/admin.cred";

/// A credential file's contents.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// `host:port` of the server.
    pub server: String,
    /// Name the server's certificate is checked against.
    pub server_name: String,
    pub tenant: String,
    pub device_id: String,
    pub role: String,
    /// 64 hex digits.
    pub secret: String,
    /// The server's certificate (PEM), trusted for this connection only.
    pub server_ca: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("server", &self.server)
            .field("tenant", &self.tenant)
            .field("device_id", &self.device_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A credential file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read credential file {path}: {source} (run `quire serve` once to create the development credentials, or pass --credential)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credential file {path} is malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("cannot write credential file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Credential {
    pub fn load(path: &Path) -> Result<Credential, CredentialError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            CredentialError::Read {
                path: path.into(),
                source,
            }
        })?);
        let c: Credential = toml::from_str(&text).map_err(|e| CredentialError::Malformed {
            path: path.into(),
            message: e.to_string(),
        })?;
        let bad = |m: &str| CredentialError::Malformed {
            path: path.into(),
            message: m.into(),
        };
        c.secret_bytes()
            .ok_or_else(|| bad("secret must be 64 hex digits"))?;
        c.role().ok_or_else(|| bad("unknown role"))?;
        Ok(c)
    }

    pub fn save(&self, path: &Path) -> Result<(), CredentialError> {
        let text = Zeroizing::new(toml::to_string(self).expect("credential serialises"));
        write_private(path, text.as_bytes()).map_err(|source| CredentialError::Write {
            path: path.into(),
            source,
        })
    }

    /// The secret as bytes, `None` if malformed.
    pub fn secret_bytes(&self) -> Option<Zeroizing<[u8; 32]>> {
        let mut out = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(self.secret.trim(), &mut out[..]).ok()?;
        Some(out)
    }

    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }
}

impl Drop for Credential {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
    }
}

/// Writes a file readable by its owner only, atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
