//! Administrative requests about devices.

use super::*;

/// Devices: issue a credential, change its state, list, rotate its secret.
pub(super) async fn devices(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let meta = state.meta.clone();
    match req {
        AdminRequest::DeviceCreate {
            tenant,
            device_id,
            role,
            enabled,
        } => {
            allow(state, principal, &tenant, Action::DeviceCreate(role), "").await?;
            let secret = quire_net::random_secret();
            let rec = DeviceRecord {
                device_id: device_id.clone(),
                tenant: tenant.clone(),
                role,
                state: if enabled {
                    DeviceState::Enabled
                } else {
                    DeviceState::Pending
                },
                secret_hash: auth::hash_secret(&secret),
            };
            let r = rec.clone();
            blocking(move || -> Result<(), Refusal> {
                if meta.device(&r.device_id)?.is_some() {
                    return Err(Refusal::new(
                        ErrorCode::Conflict,
                        format!("device {} already exists", r.device_id),
                    ));
                }
                meta.put_device(&r).map_err(|e| match e {
                    crate::meta::MetaError::NoSuchTenant(t) => {
                        Refusal::new(ErrorCode::NotFound, format!("tenant {t} not found"))
                    }
                    other => other.into(),
                })
            })
            .await?;
            info!(device = %device_id, tenant = %tenant, role = role.as_str(), by = %principal.device_id, "credential issued");
            reply(
                send,
                &Frame::AdminIssued {
                    device_id,
                    tenant,
                    role,
                    secret: *secret,
                },
            )
            .await
        }
        AdminRequest::DeviceSetState {
            device_id,
            state: new_state,
        } => {
            let id = device_id.clone();
            let m = meta.clone();
            let rec = blocking(move || m.device(&id)).await?;
            let missing =
                || Refusal::new(ErrorCode::NotFound, format!("device {device_id} not found"));
            match rec {
                Some(r) => {
                    match allow(state, principal, &r.tenant, Action::DeviceState, "").await {
                        Ok(_) => {}
                        Err(e) if e.code == ErrorCode::NotFound => return Err(missing()),
                        Err(e) => return Err(e),
                    }
                }
                None => return Err(missing()),
            }
            let id = device_id.clone();
            blocking(move || meta.set_device_state(&id, new_state)).await?;
            if new_state != DeviceState::Enabled {
                state.disconnect_device(
                    &device_id,
                    &format!(
                        "device {device_id} was {} by an administrator",
                        new_state.as_str()
                    ),
                );
            }
            info!(device = %device_id, state = new_state.as_str(), by = %principal.device_id, "device state changed");
            reply(send, &Frame::Done).await
        }
        AdminRequest::DeviceList { tenant } => {
            allow(state, principal, &tenant, Action::DeviceList, "").await?;
            let list = blocking(move || meta.devices(&tenant)).await?;
            reply(send, &Frame::AdminDevices(list)).await
        }
        AdminRequest::DeviceRotate { device_id } => {
            let id = device_id.clone();
            let m = meta.clone();
            let missing =
                || Refusal::new(ErrorCode::NotFound, format!("device {device_id} not found"));
            let rec = match blocking(move || m.device(&id)).await? {
                Some(r) => r,
                None => return Err(missing()),
            };
            match allow(
                state,
                principal,
                &rec.tenant,
                Action::DeviceRotate(rec.role),
                "",
            )
            .await
            {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::NotFound => return Err(missing()),
                Err(e) => return Err(e),
            }
            let secret = quire_net::random_secret();
            let (id, hash) = (rec.device_id.clone(), auth::hash_secret(&secret));
            let rec = blocking(move || meta.rotate_secret(&id, hash)).await?;
            // The old secret is void; connections opened with it go now.
            state.disconnect_device(
                &device_id,
                &format!("the credential of device {device_id} was rotated"),
            );
            reply(
                send,
                &Frame::AdminIssued {
                    device_id: rec.device_id,
                    tenant: rec.tenant,
                    role: rec.role,
                    secret: *secret,
                },
            )
            .await
        }
        other => Err(misrouted(&other)),
    }
}
