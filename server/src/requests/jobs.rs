//! Jobs: who owns one (the claim), opening it for a push, committing it, reading it back.

use super::*;

/// The job, and the upload pushing it, that a page names.
pub(super) struct UploadRef<'a> {
    pub tenant: &'a str,
    pub job_id: &'a str,
    pub upload: Option<UploadId>,
}

/// Claims a job for the device's upload before any of its pages is touched: a job id
/// another device or another upload is pushing is refused, so two uploads never mix (see
/// `meta/jobs.rs`).
pub(super) async fn claim(
    state: &State,
    principal: &Principal,
    tenant: &str,
    job_id: &str,
    upload: Option<UploadId>,
) -> Result<crate::meta::JobRow, Refusal> {
    let (meta, t, j, d) = (
        state.meta.clone(),
        tenant.to_string(),
        job_id.to_string(),
        principal.device_id.clone(),
    );
    Ok(blocking(move || meta.claim_job(&t, &j, &d, upload)).await?)
}

/// For a scanner's page, in one metadata call (one hand-off to a blocking thread, and one
/// round trip to a shared database, instead of three per page): the device is still
/// enabled, the job is claimed for its upload (written only for its first page), and
/// whether the page is already on record, which spares the pipeline asking the store.
pub(super) async fn claim_for_page(
    state: &State,
    principal: &Principal,
    tenant: &str,
    job_id: &str,
    index: u32,
    upload: Option<UploadId>,
) -> Result<(crate::meta::JobRow, Prior), Refusal> {
    let (meta, t, j, d) = (
        state.meta.clone(),
        tenant.to_string(),
        job_id.to_string(),
        principal.device_id.clone(),
    );
    blocking(move || {
        let seen = meta.page_context(&t, &j, &d, index)?;
        device_usable(seen.device, &d)?;
        let job = match seen.job {
            Some(row) if crate::meta::held_by(&row, &j, &d, upload)? => row,
            _ => meta.claim_job(&t, &j, &d, upload)?,
        };
        let prior = match seen.recorded {
            true => Prior::Unknown,
            false => Prior::NotRecorded,
        };
        Ok((job, prior))
    })
    .await
}

/// A page for a job that is committed: it cannot change any more.
pub(super) fn already_committed(job_id: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Conflict,
        format!("job {job_id} is already committed; push new pages as a new job"),
    )
}

/// Why a page's record was refused (`MetaError::NotHeld`): the device was disabled or
/// revoked, or the job committed, aborted or taken by another upload since the connection
/// opened it. Read again to tell the scanner which.
pub(super) async fn why_not_held(
    state: &State,
    principal: &Principal,
    at: &UploadRef<'_>,
    index: u32,
) -> Refusal {
    let not_held = crate::meta::MetaError::NotHeld {
        job: at.job_id.to_string(),
    };
    let (meta, t, j, d) = (
        state.meta.clone(),
        at.tenant.to_string(),
        at.job_id.to_string(),
        principal.device_id.clone(),
    );
    let seen = match blocking(move || meta.page_context(&t, &j, &d, index)).await {
        Ok(seen) => seen,
        Err(e) => return e.into(),
    };
    if let Err(refusal) = device_usable(seen.device, &principal.device_id) {
        return refusal;
    }
    let job_id = at.job_id;
    match seen.job {
        None => Refusal::new(
            ErrorCode::NotFound,
            format!("job {job_id} was aborted while its pages were arriving; push it again"),
        ),
        Some(row) if row.committed => already_committed(job_id),
        Some(row) => match crate::meta::held_by(&row, job_id, &principal.device_id, at.upload) {
            Err(e) => e.into(),
            Ok(_) => not_held.into(),
        },
    }
}

/// A job's record and its stored pages, read off the async workers.
pub(super) async fn job_and_pages(
    state: &State,
    tenant: &str,
    job_id: &str,
) -> Result<(Option<crate::meta::JobRow>, Vec<PageEntry>), Refusal> {
    let (meta, t, j) = (state.meta.clone(), tenant.to_string(), job_id.to_string());
    Ok(blocking(move || -> Result<_, crate::meta::MetaError> {
        Ok((meta.job(&t, &j)?, meta.pages(&t, &j)?))
    })
    .await?)
}

/// Answers a `JobOpen` with what [`job_and_pages`] read.
pub(super) async fn job_status(
    job: Option<crate::meta::JobRow>,
    pages: Vec<PageEntry>,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    reply(
        send,
        &Frame::JobStatus {
            committed: job.is_some_and(|j| j.committed),
            pages,
        },
    )
    .await
}

pub(super) async fn job_commit(
    state: &State,
    tenant: &str,
    job_id: &str,
    page_count: u32,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let (meta, t, j) = (state.meta.clone(), tenant.to_string(), job_id.to_string());
    let crate::meta::CommitView {
        job,
        pages,
        foreign,
    } = blocking(move || meta.commit_view(&t, &j)).await?;
    if !foreign.is_empty() {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "job {job_id} cannot be committed: pages {:?} were stored by another upload; \
                 an administrator can clear the job with `quire admin job abort`",
                &foreign[..foreign.len().min(20)]
            ),
        ));
    }
    if job.is_none() && page_count > 0 {
        return Err(Refusal::new(
            ErrorCode::NotFound,
            format!("job {job_id} has no stored pages"),
        ));
    }
    if pages.len() != page_count as usize
        || pages.iter().enumerate().any(|(i, p)| p.index as usize != i)
    {
        let have: Vec<u32> = pages.iter().map(|p| p.index).collect();
        let missing: Vec<u32> = (0..page_count)
            .filter(|i| !have.contains(i))
            .take(20)
            .collect();
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "job {job_id} cannot be committed with {page_count} pages: {} stored, missing {missing:?}",
                pages.len()
            ),
        ));
    }
    if let Some(row) = job.as_ref().filter(|row| row.committed) {
        // Committed before (a scanner that lost the answer commits again): the manifest
        // and its signature stay as they were.
        return reply(
            send,
            &Frame::JobCommitted {
                pages: page_count,
                bytes: row.bytes,
            },
        )
        .await;
    }
    let mut manifest = Manifest {
        job_id: job_id.to_string(),
        pages,
        seal: None,
    };
    // Signed with the commit time, before it is stored: every committed job is signed.
    let now = crate::signing::now_unix_ms();
    crate::signing::sign(
        &state.pipeline,
        &state.signing_keys,
        tenant,
        &mut manifest,
        now,
    )
    .await?;
    state
        .timestamps
        .stamp(tenant, &mut manifest)
        .await
        .map_err(|why| Refusal::new(ErrorCode::StoreUnavailable, why))?;
    state.pipeline.write_manifest(tenant, &manifest).await?;
    let bytes = manifest.total_bytes();
    let (meta, t, j) = (state.meta.clone(), tenant.to_string(), job_id.to_string());
    blocking(move || meta.commit_job(&t, &j, page_count, bytes)).await?;
    // A node killed while writing one of these pages (the scanner then sent it again) left
    // a partial copy beside it. Only where every copy of every page was written before it
    // was recorded (ack = "stored" without replicas, or "replicated"); spooled pages and
    // replica copies may still be on their way (a crashed node's spool removes its own
    // leftovers when it recovers them).
    let all_written = match state.pipeline.config.ack {
        quire_pipeline::AckMode::Stored => state.pipeline.replicas_for(tenant).is_empty(),
        quire_pipeline::AckMode::Replicated => true,
        quire_pipeline::AckMode::Spooled => false,
    };
    if all_written {
        match state.pipeline.remove_job_leftovers(tenant, job_id).await {
            Ok(0) => {}
            Ok(n) => info!(
                tenant,
                job = job_id,
                files = n,
                "removed partial page copies a killed writer left"
            ),
            Err(e) => {
                warn!(tenant, job = job_id, error = %e, "cannot remove partial page copies a killed writer left; they go when the job is deleted")
            }
        }
    }
    info!(
        tenant,
        job = job_id,
        pages = page_count,
        bytes,
        "job committed"
    );
    reply(
        send,
        &Frame::JobCommitted {
            pages: page_count,
            bytes,
        },
    )
    .await
}

pub(super) async fn job_get(
    state: &State,
    tenant: &str,
    job_id: &str,
    page: Option<u32>,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let not_found = || {
        Refusal::new(
            ErrorCode::NotFound,
            format!("job {job_id} not found or not committed"),
        )
    };
    let manifest = match state.pipeline.read_manifest(tenant, job_id).await {
        Ok(m) => m,
        Err(PipelineError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let selected: Vec<PageEntry> = match page {
        None => manifest.pages.clone(),
        Some(n) => vec![manifest.pages.get(n as usize).cloned().ok_or_else(|| {
            Refusal::new(ErrorCode::NotFound, format!("job {job_id} has no page {n}"))
        })?],
    };
    reply(
        send,
        &Frame::Manifest {
            job_id: manifest.job_id.clone(),
            pages: manifest.pages.clone(),
        },
    )
    .await?;
    for entry in selected {
        reply(send, &Frame::PageBegin(entry.clone())).await?;
        let key = keys::page_key(tenant, job_id, entry.index);
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let pipeline = state.pipeline.clone();
        let t = tenant.to_string();
        let reading = tokio::spawn(async move { pipeline.read_object(&t, &key, tx).await });
        while let Some(b) = rx.recv().await {
            if let Err(e) = write_data(send, b).await {
                return Err(Refusal::new(ErrorCode::Internal, e.to_string()));
            }
        }
        let (digest, len) = reading.await.expect("read task panicked")?;
        if digest != entry.sha256 || len != entry.size {
            return Err(PipelineError::Corrupt {
                key: keys::page_key(tenant, job_id, entry.index),
                source: quire_codecs::sealed::SealError::MalformedHeader(
                    "the page does not match its manifest entry",
                ),
            }
            .into());
        }
        reply(send, &Frame::PageEnd).await?;
    }
    reply(send, &Frame::Done).await
}
