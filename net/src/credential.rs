//! Credential files on disk: read, checked (the format is [`quire_codecs::credential`]) and
//! written with mode 0600, atomically.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Where `serve` writes the development device credential, relative to its data directory.
pub const DEV_DEVICE_CRED: &str = "dev/device.cred";
/// Where `serve` writes the development admin credential, relative to its data directory.
pub const DEV_ADMIN_CRED: &str = "dev/admin.cred";

pub use quire_codecs::credential::Credential;

/// A credential file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    // `error`, not `source`: the message says it already, so a report of the error chain
    // does not say it twice.
    #[error("cannot read credential file {path}: {error} (run `quire serve` once to create the development credentials, or pass --credential)")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("credential file {path} is malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("cannot write credential file {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Reading and writing credential files (the format itself is
/// [`quire_codecs::credential`]).
pub trait CredentialFile: Sized {
    /// Reads and checks a credential file.
    fn load(path: &Path) -> Result<Self, CredentialError>;
    /// Writes the credential to `path` with mode 0600, atomically.
    fn save(&self, path: &Path) -> Result<(), CredentialError>;
}

impl CredentialFile for Credential {
    fn load(path: &Path) -> Result<Credential, CredentialError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|error| {
            CredentialError::Read {
                path: path.into(),
                error,
            }
        })?);
        Credential::parse(&text).map_err(|message| CredentialError::Malformed {
            path: path.into(),
            message,
        })
    }

    fn save(&self, path: &Path) -> Result<(), CredentialError> {
        write_private(path, self.to_toml().as_bytes()).map_err(|error| CredentialError::Write {
            path: path.into(),
            error,
        })
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
