//! `quire deliver`: the delivery consumer. Pulls every committed job of a tenant that no
//! consumer has acknowledged yet, verifies each page against the job manifest (see
//! [`super::get`]), moves the job into place only once all of it is verified, and then
//! acknowledges it, which lets the tenant's retention policy (e.g. delete-on-delivery) act.

use std::path::{Path, PathBuf};

use quire_codecs::wire::{AdminRequest, Frame, JobInfo};

use super::{local_err, ClientError, Connection};

/// One job handed over.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub job: JobInfo,
    pub dir: PathBuf,
    /// Objects the server deleted on acknowledgement.
    pub deleted_objects: u32,
    /// Why the server kept the job, if it did.
    pub kept_because: String,
}

/// The tenant's jobs waiting for delivery.
pub async fn pending(conn: &Connection, tenant: &str) -> Result<Vec<JobInfo>, ClientError> {
    match conn
        .call(&Frame::Admin(AdminRequest::DeliveryList {
            tenant: tenant.into(),
        }))
        .await?
    {
        Frame::AdminJobs(v) => Ok(v),
        f => Err(ClientError::Protocol(format!("unexpected answer {f:?}"))),
    }
}

/// Delivers one job into `out_dir/<job>` and acknowledges it.
pub async fn deliver_job(
    conn: &Connection,
    tenant: &str,
    job: JobInfo,
    out_dir: &Path,
) -> Result<Delivered, ClientError> {
    let dest = out_dir.join(&job.job_id);
    let partial = out_dir.join(format!(".{}.partial", job.job_id));
    if partial.exists() {
        tokio::fs::remove_dir_all(&partial)
            .await
            .map_err(|e| local_err(&partial, e))?;
    }
    if let Err(e) = super::get::get_job(conn, &job.job_id, None, &partial).await {
        // Nothing unverified stays behind: the pages verified so far go with the rest.
        let _ = tokio::fs::remove_dir_all(&partial).await;
        return Err(e);
    }
    // A job delivered before whose acknowledgement was lost is replaced by the fresh copy.
    if dest.exists() {
        tokio::fs::remove_dir_all(&dest)
            .await
            .map_err(|e| local_err(&dest, e))?;
    }
    tokio::fs::rename(&partial, &dest)
        .await
        .map_err(|e| local_err(&dest, e))?;
    match conn
        .call(&Frame::Admin(AdminRequest::DeliveryAck {
            tenant: tenant.into(),
            job_id: job.job_id.clone(),
        }))
        .await?
    {
        Frame::AdminDelivered {
            deleted_objects,
            kept_because,
        } => Ok(Delivered {
            job,
            dir: dest,
            deleted_objects,
            kept_because,
        }),
        f => Err(ClientError::Protocol(format!("unexpected answer {f:?}"))),
    }
}
