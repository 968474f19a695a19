//! The one seam every key service plugs into: wrap and unwrap, never hand out a key.

use quire_codecs::sealed::SecretKey;

/// Which tenant key a wrap or unwrap is for; the backend binds both fields to the result
/// (associated data, encryption context), so a wrapped key moved to another tenant or
/// version does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyName<'a> {
    pub tenant: &'a str,
    pub version: u32,
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The wrapped bytes do not open under this key: wrong key, wrong service, or damaged.
    #[error("the wrapped key does not open under this backend's key (wrong key or damaged)")]
    Refused,
    /// The tenant's key exists no more, or is disabled (a shred, or an operator's hand).
    #[error("the tenant's key is disabled or destroyed in the key service: {0}")]
    Disabled(String),
    /// The service could not be reached or failed; retrying later may work.
    #[error("the key service is unavailable: {0}. Check that it is reachable and that Quire's credentials for it are valid")]
    Unavailable(String),
    /// The service refused Quire's request (credentials, permissions, configuration).
    #[error(
        "the key service refused the request: {0}. Check Quire's credentials and the key policy"
    )]
    Denied(String),
}

/// A key service holding each tenant's root key. Implementations must never log key bytes
/// and must be safe to call from many threads (calls block; the keyring makes them rare).
pub trait KeyBackend: Send + Sync + std::fmt::Debug {
    /// Short name for messages: `file`, `aws-kms`, `pkcs11`.
    fn kind(&self) -> &'static str;
    /// Reaches the service and proves Quire may use it (for `serve --check`).
    fn probe(&self) -> Result<(), BackendError>;
    /// Makes sure the root key for `name` exists (created on first use), before a wrap.
    fn prepare(&self, name: KeyName<'_>) -> Result<(), BackendError>;
    /// Wraps `key` for `name`. The result is opaque and bounded (under 8 KiB).
    fn wrap(&self, name: KeyName<'_>, key: &SecretKey) -> Result<Vec<u8>, BackendError>;
    /// Reverses [`KeyBackend::wrap`].
    fn unwrap(&self, name: KeyName<'_>, wrapped: &[u8]) -> Result<SecretKey, BackendError>;
    /// Destroys what only `name` uses, if the backend keeps a key per version.
    fn retire(&self, name: KeyName<'_>) -> Result<(), BackendError>;
    /// Destroys every root key of the tenant; every later unwrap for it fails.
    fn shred(&self, tenant: &str) -> Result<(), BackendError>;
}

/// Most bytes a wrapped key may take in the keyring file (KMS ciphertext blobs are ~200).
pub const MAX_WRAPPED_LEN: usize = 8 * 1024;

/// Associated data binding a wrapped intermediate key to its tenant and version.
pub(crate) fn wrap_context(label: &[u8], name: KeyName<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + 1 + name.tenant.len() + 4);
    aad.extend_from_slice(label);
    aad.push(name.tenant.len() as u8);
    aad.extend_from_slice(name.tenant.as_bytes());
    aad.extend_from_slice(&name.version.to_be_bytes());
    aad
}
