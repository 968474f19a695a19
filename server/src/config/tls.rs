//! `[tls]`: the certificate the server presents, its key, and the CA scanners pin.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
}

/// `[tls]`: the server's certificate chain (its own certificate first), its key, and the CA
/// certificate scanners pin (optional: without it they pin the server's own certificate and
/// every renewal needs new credentials).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// Both of `[tls] cert` and `key`, or neither (a generated development certificate); `ca`
/// only with them.
pub(super) fn resolve_tls(t: TlsSection) -> Result<Option<TlsFiles>, ConfigError> {
    let invalid = |key: &str, reason: &str| ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    };
    Ok(match (t.cert, t.key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            ca: t.ca,
        }),
        (None, None) if t.ca.is_some() => {
            return Err(invalid(
                "tls.ca",
                "tls.ca is the CA of tls.cert, so tls.cert and tls.key must be set too",
            ))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "tls.key",
                "tls.cert is set, so tls.key must be too",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls.cert",
                "tls.key is set, so tls.cert must be too",
            ))
        }
    })
}
