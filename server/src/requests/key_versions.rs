//! Administrative requests about a tenant's keys: rotate, re-wrap, retire.

use super::*;

/// Key versions of a tenant: add one, move stored data keys to the newest, destroy an old one.
pub(super) async fn keys(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let meta = state.meta.clone();
    match req {
        AdminRequest::KeyRotate { tenant } => {
            allow(state, principal, &tenant, Action::KeyRotate, "").await?;
            tenant_exists(state, &tenant).await?;
            let vault = state.pipeline.vault.clone();
            let t = tenant.clone();
            let version = blocking(move || vault.rotate(&t))
                .await
                .map_err(PipelineError::from)?;
            let t = tenant.clone();
            blocking(move || meta.record_kek_versions(&t, version)).await?;
            info!(tenant = %tenant, version, by = %principal.device_id, "tenant key rotated");
            key_reply(send, tenant, version, 0).await
        }
        AdminRequest::KeyRewrap { tenant } => {
            allow(state, principal, &tenant, Action::KeyRewrap, "").await?;
            tenant_exists(state, &tenant).await?;
            let r = state.pipeline.rewrap_tenant(&tenant).await?;
            info!(tenant = %tenant, version = r.version, rewrapped = r.rewrapped, by = %principal.device_id, "tenant data keys re-wrapped");
            key_reply(send, tenant, r.version, r.rewrapped).await
        }
        AdminRequest::KeyRetire { tenant, version } => {
            allow(state, principal, &tenant, Action::KeyRetire, "").await?;
            tenant_exists(state, &tenant).await?;
            // The vault's own refusals (the newest version, one that never was) come first:
            // counting objects reads every header of the tenant.
            let vault = state.pipeline.vault.clone();
            let t = tenant.clone();
            let newest = blocking(move || vault.versions(&t))
                .await
                .map_err(PipelineError::from)?;
            if version == 0 || version >= newest {
                let e = if version == newest {
                    quire_pipeline::VaultError::RetireNewest {
                        tenant: tenant.clone(),
                        version,
                    }
                } else {
                    quire_pipeline::VaultError::UnknownKey {
                        tenant: tenant.clone(),
                        version,
                    }
                };
                return Err(Refusal::new(ErrorCode::Conflict, e.to_string()));
            }
            let still = state.pipeline.objects_under_key(&tenant, version).await?;
            if still > 0 {
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    format!(
                        "{still} stored object(s) of tenant {tenant} are still under key version \
                         {version}; run `quire admin key rewrap --tenant {tenant}` (and let the \
                         spool deliver), then retire it"
                    ),
                ));
            }
            let vault = state.pipeline.vault.clone();
            let t = tenant.clone();
            blocking(move || vault.retire(&t, version))
                .await
                .map_err(PipelineError::from)?;
            info!(tenant = %tenant, version, by = %principal.device_id, "tenant key version retired");
            key_reply(send, tenant, version, 0).await
        }
        other => Err(misrouted(&other)),
    }
}

/// The answer to every key operation: the tenant, the version concerned, objects re-wrapped.
async fn key_reply(
    send: &mut quinn::SendStream,
    tenant: String,
    version: u32,
    rewrapped: u64,
) -> Result<(), Refusal> {
    reply(
        send,
        &Frame::AdminKey {
            tenant,
            version,
            rewrapped,
        },
    )
    .await
}
