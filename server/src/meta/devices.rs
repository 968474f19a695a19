//! Device records as the store keeps them: a JSON row with the secret's digest in hex.

use super::*;

#[derive(Serialize, Deserialize)]
pub(super) struct DeviceRow {
    tenant: String,
    role: String,
    state: String,
    secret_hash: String,
}

impl DeviceRow {
    pub(super) fn encode(rec: &DeviceRecord) -> Vec<u8> {
        serde_json::to_vec(&DeviceRow {
            tenant: rec.tenant.clone(),
            role: rec.role.as_str().into(),
            state: rec.state.as_str().into(),
            secret_hash: hex::encode(rec.secret_hash),
        })
        .expect("row serialises")
    }
}

/// What an administrator's state change does to a device: a revoked device stays revoked.
pub(super) fn set_state(
    device_id: &str,
    state: DeviceState,
) -> impl FnOnce(&mut DeviceRecord) -> Result<(), MetaError> + Send + 'static {
    let id = device_id.to_string();
    move |rec| {
        if rec.state == DeviceState::Revoked && state != DeviceState::Revoked {
            return Err(MetaError::Revoked(id));
        }
        rec.state = state;
        Ok(())
    }
}

/// What a new secret does to a device: a revoked device's credential stays void.
pub(super) fn rotate(
    device_id: &str,
    secret_hash: [u8; 32],
) -> impl FnOnce(&mut DeviceRecord) -> Result<(), MetaError> + Send + 'static {
    let id = device_id.to_string();
    move |rec| {
        if rec.state == DeviceState::Revoked {
            return Err(MetaError::Revoked(id));
        }
        rec.secret_hash = secret_hash;
        Ok(())
    }
}

pub(super) fn decode_device(device_id: &str, raw: &[u8]) -> Result<DeviceRecord, MetaError> {
    let row: DeviceRow =
        serde_json::from_slice(raw).map_err(|e| MetaError::Corrupt(e.to_string()))?;
    let corrupt = || MetaError::Corrupt(format!("device {device_id}"));
    let mut secret_hash = [0u8; 32];
    hex::decode_to_slice(&row.secret_hash, &mut secret_hash).map_err(|_| corrupt())?;
    Ok(DeviceRecord {
        device_id: device_id.to_string(),
        tenant: row.tenant,
        role: Role::parse(&row.role).ok_or_else(corrupt)?,
        state: DeviceState::parse(&row.state).ok_or_else(corrupt)?,
        secret_hash,
    })
}
