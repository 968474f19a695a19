//! Stage 1, authenticate: who is on this connection, and may they send for this tenant?
//!
//! Device credentials are 256-bit random secrets. The server keeps only
//! `SHA-256("quire/1 device secret" || secret)`: a fast hash suffices because the secret has
//! full entropy (nothing to brute-force), and the comparison is constant-time.

use quire_codecs::wire::{DeviceState, ErrorCode, Role};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What the server stores about a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: String,
    pub tenant: String,
    pub role: Role,
    pub state: DeviceState,
    pub secret_hash: [u8; 32],
}

/// The authenticated party behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub device_id: String,
    pub tenant: String,
    pub role: Role,
}

/// Why a request was refused. Messages name the reason without revealing other tenants' data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("unknown device {0}")]
    UnknownDevice(String),
    #[error("the credential for device {0} is not valid")]
    BadCredential(String),
    #[error("device {device} is {state}: {}", what_next(state))]
    DeviceDisabled { device: String, state: &'static str },
    #[error("the request names tenant {requested}, but this connection belongs to another tenant")]
    TenantMismatch { requested: String },
    #[error("this request needs the {needed} role")]
    Forbidden { needed: &'static str },
}

/// What the holder of a refused credential can do about its state.
fn what_next(state: &str) -> &'static str {
    if state == "revoked" {
        "its credential is withdrawn for good; enroll the scanner again under a new device id"
    } else {
        "an administrator must enable it before it may send"
    }
}

impl AuthError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::UnknownDevice(_) => ErrorCode::UnknownDevice,
            AuthError::BadCredential(_) => ErrorCode::BadCredential,
            AuthError::DeviceDisabled { .. } => ErrorCode::DeviceDisabled,
            AuthError::TenantMismatch { .. } => ErrorCode::TenantMismatch,
            AuthError::Forbidden { .. } => ErrorCode::Forbidden,
        }
    }
}

/// Hashes a device secret for storage.
pub fn hash_secret(secret: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"quire/1 device secret");
    h.update(secret);
    h.finalize().into()
}

/// Checks a presented credential against the stored record (`None` if the device is unknown).
/// The tenant the client claims must be the device's own.
pub fn authenticate(
    record: Option<&DeviceRecord>,
    device_id: &str,
    claimed_tenant: &str,
    secret: &[u8; 32],
) -> Result<Principal, AuthError> {
    let rec = record.ok_or_else(|| AuthError::UnknownDevice(device_id.into()))?;
    let presented = hash_secret(secret);
    if !bool::from(presented.ct_eq(&rec.secret_hash)) {
        return Err(AuthError::BadCredential(device_id.into()));
    }
    if rec.state != DeviceState::Enabled {
        return Err(AuthError::DeviceDisabled {
            device: device_id.into(),
            state: rec.state.as_str(),
        });
    }
    let p = Principal {
        device_id: rec.device_id.clone(),
        tenant: rec.tenant.clone(),
        role: rec.role,
    };
    p.check_tenant(claimed_tenant)?;
    Ok(p)
}

impl Principal {
    /// Every request names its tenant; it must be the principal's own.
    pub fn check_tenant(&self, requested: &str) -> Result<(), AuthError> {
        if bool::from(self.tenant.as_bytes().ct_eq(requested.as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::TenantMismatch {
                requested: requested.into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: DeviceState) -> DeviceRecord {
        DeviceRecord {
            device_id: "d1".into(),
            tenant: "acme".into(),
            role: Role::Device,
            state,
            secret_hash: hash_secret(&[5; 32]),
        }
    }

    #[test]
    fn each_refusal_has_its_own_reason() {
        let ok = rec(DeviceState::Enabled);
        assert!(authenticate(Some(&ok), "d1", "acme", &[5; 32]).is_ok());
        assert_eq!(
            authenticate(None, "d9", "acme", &[5; 32])
                .unwrap_err()
                .code(),
            ErrorCode::UnknownDevice
        );
        assert_eq!(
            authenticate(Some(&ok), "d1", "acme", &[6; 32])
                .unwrap_err()
                .code(),
            ErrorCode::BadCredential
        );
        for s in [
            DeviceState::Pending,
            DeviceState::Disabled,
            DeviceState::Revoked,
        ] {
            assert_eq!(
                authenticate(Some(&rec(s)), "d1", "acme", &[5; 32])
                    .unwrap_err()
                    .code(),
                ErrorCode::DeviceDisabled
            );
        }
        assert_eq!(
            authenticate(Some(&ok), "d1", "beta", &[5; 32])
                .unwrap_err()
                .code(),
            ErrorCode::TenantMismatch
        );
    }
}
