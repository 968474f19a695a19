//! `quire deliver`: the delivery consumer. Pulls every committed job of a tenant that no
//! consumer has acknowledged yet, verifies each page against the job manifest (see
//! [`super::get`]) and the manifest's signature, moves the job into place only once all of
//! it is verified, writes the signed manifest beside it (`<job>.manifest.json`, for
//! `quire verify` later), and then acknowledges it, which lets the tenant's retention
//! policy (e.g. delete-on-delivery) act.

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
    /// The signed manifest written beside the job; `None` for a job committed before
    /// manifests were signed.
    pub manifest: Option<PathBuf>,
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
    let signed = match fetch_verified(conn, tenant, &job.job_id, &partial).await {
        Ok(signed) => signed,
        Err(e) => {
            // Nothing unverified stays behind: the pages verified so far go with the rest.
            let _ = tokio::fs::remove_dir_all(&partial).await;
            return Err(e);
        }
    };
    // A job delivered before whose acknowledgement was lost is replaced by the fresh copy.
    if dest.exists() {
        tokio::fs::remove_dir_all(&dest)
            .await
            .map_err(|e| local_err(&dest, e))?;
    }
    tokio::fs::rename(&partial, &dest)
        .await
        .map_err(|e| local_err(&dest, e))?;
    let manifest = match signed {
        Some(doc) => {
            let path = out_dir.join(format!("{}.manifest.json", job.job_id));
            tokio::fs::write(&path, doc.to_json() + "\n")
                .await
                .map_err(|e| local_err(&path, e))?;
            Some(path)
        }
        None => None,
    };
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
            manifest,
        }),
        f => Err(ClientError::Protocol(format!("unexpected answer {f:?}"))),
    }
}

/// Fetches the job into `dir`, every page checked against the manifest, and the signed
/// manifest checked (with the key the server names) to list exactly those pages. `None`:
/// the job was committed before manifests were signed.
async fn fetch_verified(
    conn: &Connection,
    tenant: &str,
    job_id: &str,
    dir: &Path,
) -> Result<Option<quire_codecs::signed::SignedManifest>, ClientError> {
    let fetched = super::get::get_job(conn, job_id, None, dir).await?;
    let doc = match super::verify::signed_manifest(conn, tenant, job_id, "").await? {
        Ok(doc) => doc,
        Err(_unsigned) => return Ok(None),
    };
    let trusted = super::verify::TrustedKeys::named_by(&doc).map_err(ClientError::Protocol)?;
    let pages = doc.verify(|id| trusted.get(id))?;
    let got: Vec<_> = fetched.into_iter().map(|f| f.entry).collect();
    if got != pages {
        return Err(ClientError::Protocol(format!(
            "job {job_id}: the pages fetched are not the ones its signed manifest lists"
        )));
    }
    Ok(Some(doc))
}
