//! `quire admin`: tenant and device management over the same authenticated QUIC protocol,
//! never by editing the server's files behind its back.

use quire_codecs::wire::{AdminRequest, DeviceInfo, DeviceState, Frame, Role};

use super::{ClientError, Connection};
use quire_net::credential::Credential;

fn unexpected(f: Frame) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {f:?}"))
}

/// Creates a tenant (service admin only).
pub async fn create_tenant(conn: &Connection, name: &str) -> Result<(), ClientError> {
    match conn
        .call(&Frame::Admin(AdminRequest::TenantCreate {
            tenant: name.into(),
        }))
        .await?
    {
        Frame::Done => Ok(()),
        f => Err(unexpected(f)),
    }
}

/// Issues a credential for a new device and returns it, ready to save. It points at the
/// same server, trusting the same certificate, as `admin_cred`.
pub async fn create_device(
    conn: &Connection,
    admin_cred: &Credential,
    server: &str,
    tenant: &str,
    device_id: &str,
    role: Role,
    enabled: bool,
) -> Result<Credential, ClientError> {
    let answer = conn
        .call(&Frame::Admin(AdminRequest::DeviceCreate {
            tenant: tenant.into(),
            device_id: device_id.into(),
            role,
            enabled,
        }))
        .await?;
    issued_credential(answer, admin_cred, server)
}

/// The credential an `AdminIssued` answer carries, pointing at the admin's server.
fn issued_credential(
    answer: Frame,
    admin_cred: &Credential,
    server: &str,
) -> Result<Credential, ClientError> {
    match answer {
        Frame::AdminIssued {
            device_id,
            tenant,
            role,
            secret,
        } => Ok(Credential {
            server: server.into(),
            server_name: admin_cred.server_name.clone(),
            tenant,
            device_id,
            role: role.as_str().into(),
            secret: hex::encode(secret),
            server_ca: admin_cred.server_ca.clone(),
        }),
        f => Err(unexpected(f)),
    }
}

/// Enables, disables or revokes a device.
pub async fn set_device_state(
    conn: &Connection,
    device_id: &str,
    state: DeviceState,
) -> Result<(), ClientError> {
    match conn
        .call(&Frame::Admin(AdminRequest::DeviceSetState {
            device_id: device_id.into(),
            state,
        }))
        .await?
    {
        Frame::Done => Ok(()),
        f => Err(unexpected(f)),
    }
}

/// Lists a tenant's devices.
pub async fn list_devices(conn: &Connection, tenant: &str) -> Result<Vec<DeviceInfo>, ClientError> {
    match conn
        .call(&Frame::Admin(AdminRequest::DeviceList {
            tenant: tenant.into(),
        }))
        .await?
    {
        Frame::AdminDevices(v) => Ok(v),
        f => Err(unexpected(f)),
    }
}

/// A tenant's jobs (or the one named) and where each is in its life.
pub async fn list_jobs(
    conn: &Connection,
    tenant: &str,
    job: Option<&str>,
) -> Result<Vec<quire_codecs::wire::JobState>, ClientError> {
    match conn
        .call(&Frame::Admin(AdminRequest::JobList {
            tenant: tenant.into(),
            job: job.map(str::to_string),
        }))
        .await?
    {
        Frame::AdminJobStates(v) => Ok(v),
        f => Err(unexpected(f)),
    }
}

/// Runs a key operation (rotate, rewrap, shred) and returns (version, objects re-wrapped).
pub async fn key_op(conn: &Connection, req: AdminRequest) -> Result<(u32, u64), ClientError> {
    match conn.call(&Frame::Admin(req)).await? {
        Frame::AdminKey {
            version, rewrapped, ..
        } => Ok((version, rewrapped)),
        f => Err(unexpected(f)),
    }
}

/// Issues a one-time enrollment token for `tenant`; returns its printable form (which pins
/// the server certificate of `admin_cred`) and its expiry.
pub async fn create_token(
    conn: &Connection,
    admin_cred: &Credential,
    tenant: &str,
    ttl_secs: u32,
) -> Result<(String, u64), ClientError> {
    let answer = conn
        .call(&Frame::Admin(AdminRequest::TokenCreate {
            tenant: tenant.into(),
            ttl_secs,
        }))
        .await?;
    match answer {
        Frame::AdminToken {
            token,
            expires_unix,
        } => {
            let fp = quire_net::tls::pem_fingerprint(&admin_cred.server_ca)?;
            Ok((
                super::enroll::EnrollToken::format(&token, &fp),
                expires_unix,
            ))
        }
        f => Err(unexpected(f)),
    }
}

/// Rotates a device's secret; returns the new credential, ready to save.
pub async fn rotate_device(
    conn: &Connection,
    admin_cred: &Credential,
    server: &str,
    device_id: &str,
) -> Result<Credential, ClientError> {
    let answer = conn
        .call(&Frame::Admin(AdminRequest::DeviceRotate {
            device_id: device_id.into(),
        }))
        .await?;
    issued_credential(answer, admin_cred, server)
}

/// Checks a tenant's audit chain against its signed checkpoints (on the server).
pub async fn verify_audit(
    conn: &Connection,
    tenant: &str,
) -> Result<quire_codecs::wire::AuditReport, ClientError> {
    match conn
        .call(&Frame::Admin(AdminRequest::AuditVerify {
            tenant: tenant.into(),
        }))
        .await?
    {
        Frame::AdminAuditReport(r) => Ok(r),
        f => Err(unexpected(f)),
    }
}

/// Writes a tenant's audit trail from `since_unix_ms` (JSON lines: a header with the public
/// keys, the records, the checkpoints) to `out`; returns the bytes written.
pub async fn export_audit(
    conn: &Connection,
    tenant: &str,
    since_unix_ms: u64,
    out: &mut impl std::io::Write,
) -> Result<u64, ClientError> {
    let (mut send, mut reader) = conn
        .open(&Frame::Admin(AdminRequest::AuditExport {
            tenant: tenant.into(),
            since_unix_ms,
        }))
        .await?;
    let _ = send.finish();
    let mut written = 0u64;
    loop {
        match super::expect_answer(&mut reader).await? {
            Frame::Data(b) => {
                out.write_all(&b)
                    .map_err(|e| super::local_err(std::path::Path::new("(export output)"), e))?;
                written += b.len() as u64;
            }
            Frame::Done => return Ok(written),
            f => return Err(unexpected(f)),
        }
    }
}

/// Scrubs a tenant's stored objects on the server, in every copy, and with `repair` replaces
/// bad copies with good ones: every finding (one JSON object: missing, corrupt, orphaned,
/// repaired, not_repaired, progress, done) is handed to `on_finding` as it arrives.
pub async fn scrub(
    conn: &Connection,
    tenant: &str,
    after: Option<&str>,
    max_mb_per_s: u32,
    repair: bool,
    mut on_finding: impl FnMut(serde_json::Value),
) -> Result<(), ClientError> {
    let (tenant, after) = (tenant.to_string(), after.map(str::to_string));
    let request = if repair {
        AdminRequest::ScrubRepair {
            tenant,
            after,
            max_mb_per_s,
        }
    } else {
        AdminRequest::Scrub {
            tenant,
            after,
            max_mb_per_s,
        }
    };
    let (mut send, mut reader) = conn.open(&Frame::Admin(request)).await?;
    let _ = send.finish();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match super::expect_answer(&mut reader).await? {
            Frame::Data(b) => {
                pending.extend_from_slice(&b);
                while let Some(end) = pending.iter().position(|&c| c == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let finding = serde_json::from_slice(&line)
                        .map_err(|e| ClientError::Protocol(format!("scrub finding: {e}")))?;
                    on_finding(finding);
                }
                if pending.len() > 64 * 1024 {
                    return Err(ClientError::Protocol("a scrub finding is too long".into()));
                }
            }
            Frame::Done => return Ok(()),
            f => return Err(unexpected(f)),
        }
    }
}
