//! Administrative requests: audited, routed by concern; tenants and their keys answered here.

use super::*;

pub(super) async fn admin(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let d = req.describe();
    // Reading the trail is recorded on the service chain, so that verifying or exporting a
    // tenant's chain never adds to the chain being read.
    let (chain, detail) = match req {
        AdminRequest::AuditVerify { .. } | AdminRequest::AuditExport { .. } => {
            (String::new(), format!("tenant={} {}", d.tenant, d.detail))
        }
        _ => (d.tenant, d.detail),
    };
    audited(state, principal, d.action, &chain, &detail, async {
        route(state, principal, req, send).await
    })
    .await
}

/// Hands an administrative request to the handler of its concern.
async fn route(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    use AdminRequest as R;
    match req {
        R::TenantCreate { .. }
        | R::Status { .. }
        | R::TokenCreate { .. }
        | R::TenantShred { .. } => tenants(state, principal, req, send).await,
        R::KeyRotate { .. } | R::KeyRewrap { .. } | R::KeyRetire { .. } => {
            super::key_versions::keys(state, principal, req, send).await
        }
        R::DeviceCreate { .. }
        | R::DeviceSetState { .. }
        | R::DeviceList { .. }
        | R::DeviceRotate { .. } => super::devices::devices(state, principal, req, send).await,
        R::GrantCreate { .. } | R::GrantRevoke { .. } => {
            super::grants::grants(state, principal, req, send).await
        }
        R::HoldSet { .. }
        | R::HoldRelease { .. }
        | R::DeliveryList { .. }
        | R::DeliveryAck { .. }
        | R::JobList { .. }
        | R::JobAbort { .. } => super::holds::holds(state, principal, req, send).await,
        R::AuditVerify { .. } | R::AuditExport { .. } => {
            super::audit_trail::audit_trail(state, principal, req, send).await
        }
        R::ManifestGet { .. } | R::SigningKeyExport { .. } => {
            super::signatures::signatures(state, principal, req, send).await
        }
        R::Scrub { .. } | R::ScrubRepair { .. } => {
            super::scrub::scrub_request(state, principal, req, send).await
        }
        R::BackupCreate {} => {
            allow(state, principal, "", Action::Backup, "").await?;
            let keep = state.backup.keep;
            let made =
                crate::backup::create(&state.pipeline, state.meta.as_ref(), &state.data_dir, keep)
                    .await
                    .map_err(|e| {
                        error!(error = %e, "backup failed");
                        Refusal::new(ErrorCode::Conflict, format!("the backup failed: {e}"))
                    })?;
            info!(id = %made.id, parts = made.parts.len(), by = %principal.device_id, "backup written");
            let json = serde_json::to_string_pretty(&made).expect("an index serialises");
            send_document(send, json).await
        }
        R::TlsReload {} => {
            allow(state, principal, "", Action::TlsReload, "").await?;
            state.tls.reload().map_err(|e| {
                Refusal::new(
                    ErrorCode::Conflict,
                    format!(
                        "the certificate files could not be loaded ({e}); the certificate in \
                         use stays: fix the files named by [tls] cert, key and ca and reload again"
                    ),
                )
            })?;
            info!(by = %principal.device_id, "TLS certificate reloaded on request");
            reply(send, &Frame::Done).await
        }
    }
}

/// Tenants: create, status, enrollment tokens, shred.
async fn tenants(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let meta = state.meta.clone();
    match req {
        AdminRequest::TenantCreate { tenant: name } => {
            allow(state, principal, &name, Action::TenantCreate, "").await?;
            let n = name.clone();
            blocking(move || meta.create_tenant(&n))
                .await
                .map_err(|e| match e {
                    crate::meta::MetaError::Exists(what) => {
                        Refusal::new(ErrorCode::Conflict, format!("{what} already exists"))
                    }
                    other => other.into(),
                })?;
            info!(tenant = %name, by = %principal.device_id, "tenant created");
            reply(send, &Frame::Done).await
        }
        AdminRequest::Status { tenant, reason } => {
            allow(state, principal, &tenant, Action::Status, &reason).await?;
            let t = tenant.clone();
            let st = blocking(move || meta.stats(&t)).await?;
            reply(
                send,
                &Frame::AdminStatus {
                    tenant,
                    devices: st.devices,
                    jobs: st.jobs,
                    committed_jobs: st.committed_jobs,
                    committed_bytes: st.committed_bytes,
                },
            )
            .await
        }
        AdminRequest::TokenCreate { tenant, ttl_secs } => {
            allow(state, principal, &tenant, Action::TokenCreate, "").await?;
            tenant_exists(state, &tenant).await?;
            let token = quire_net::random_secret();
            let hash = token_hash(&token);
            let expires_unix = unix_now() + u64::from(ttl_secs.clamp(60, 30 * 24 * 3600));
            let t = tenant.clone();
            blocking(move || meta.create_token(&hash, &t, expires_unix)).await?;
            info!(tenant = %tenant, expires_unix, by = %principal.device_id, "enrollment token issued");
            reply(
                send,
                &Frame::AdminToken {
                    token: *token,
                    expires_unix,
                },
            )
            .await
        }
        AdminRequest::TenantShred { tenant } => {
            allow(state, principal, &tenant, Action::TenantShred, "").await?;
            tenant_exists(state, &tenant).await?;
            let vault = state.pipeline.vault.clone();
            let t = tenant.clone();
            blocking(move || vault.shred(&t))
                .await
                .map_err(PipelineError::from)?;
            let t = tenant.clone();
            blocking(move || -> Result<(), crate::meta::MetaError> {
                // What the pages were (names, sizes, digests) goes with the keys.
                meta.forget_pages(&t)?;
                // Service admins operate the whole service; they are not the tenant's to lose.
                for d in meta
                    .devices(&t)?
                    .into_iter()
                    .filter(|d| d.role != Role::ServiceAdmin)
                {
                    meta.set_device_state(&d.device_id, DeviceState::Revoked)?;
                }
                Ok(())
            })
            .await?;
            let t = tenant.clone();
            let m = state.meta.clone();
            let revoked = blocking(move || m.devices(&t)).await?;
            for d in revoked.into_iter().filter(|d| d.role != Role::ServiceAdmin) {
                state.disconnect_device(
                    &d.device_id,
                    "the tenant's keys were destroyed; device revoked",
                );
            }
            warn!(tenant = %tenant, by = %principal.device_id, "tenant crypto-shredded: every key destroyed, devices revoked");
            reply(
                send,
                &Frame::AdminKey {
                    tenant,
                    version: 0,
                    rewrapped: 0,
                },
            )
            .await
        }
        other => Err(misrouted(&other)),
    }
}
