//! Secrets in the configuration (object-store keys): inline for development, or better from a
//! file only the server's user can read (`<key>_file`) or an environment variable
//! (`<key>_env`, e.g. from systemd's `LoadCredential` or a secret manager), so that the
//! configuration file itself holds none and can be shared, versioned and backed up.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// Longest secret file accepted.
pub const MAX_SECRET_FILE: u64 = 4096;

/// The three ways a secret may be given; exactly one must be.
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    pub inline: Option<String>,
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

/// Resolves the secret `key` (e.g. `store.secret_access_key`) from its source.
pub fn resolve(key: &str, source: SecretSource) -> Result<String, ConfigError> {
    let invalid = |field: String, reason: String| ConfigError::Invalid { key: field, reason };
    let given = [
        source.inline.is_some(),
        source.file.is_some(),
        source.env.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given > 1 {
        return Err(invalid(
            key.into(),
            format!("give one of {key}, {key}_file or {key}_env, not several"),
        ));
    }
    let value = if let Some(path) = source.file {
        read_secret_file(&path).map_err(|reason| invalid(format!("{key}_file"), reason))?
    } else if let Some(var) = source.env {
        std::env::var(&var).map_err(|_| {
            invalid(
                format!("{key}_env"),
                format!("the environment variable {var} is not set (or not UTF-8)"),
            )
        })?
    } else {
        source.inline.unwrap_or_default()
    };
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(invalid(
            key.into(),
            format!("required for this store kind (as {key}, {key}_file or {key}_env)"),
        ));
    }
    Ok(value)
}

/// Reads a secret file that is a regular file of at most [`MAX_SECRET_FILE`] bytes, closed to
/// group and others.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "{} is not a regular file of at most {MAX_SECRET_FILE} bytes",
            path.display()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}
