//! Storing one page: admission, the in-flight slot, the pipeline, the metadata row.

use super::*;

/// Chunks of a page queued between the network and the pipeline.
const INPUT_QUEUE: usize = 16;

pub(super) async fn page_put(
    state: &Arc<State>,
    Connection {
        principal,
        open,
        flow,
    }: Connection<'_>,
    at: &UploadRef<'_>,
    (page, prior, digest_at): (PageEntry, Prior, DigestAt),
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
) -> Result<(), Refusal> {
    let began = std::time::Instant::now();
    let &UploadRef {
        tenant,
        job_id,
        upload,
    } = at;
    let _place = state
        .limits
        .admit_page(&principal.device_id, tenant, job_id)
        .await
        .map_err(|e| Refusal::new(ErrorCode::LimitExceeded, e.0))?;
    let _bytes = state
        .limits
        .hold_bytes(
            &principal.device_id,
            page.size,
            state.pipeline.spool.capacity(),
        )
        .map_err(|e| Refusal::new(ErrorCode::LimitExceeded, e.0))?;
    let slot_key = keys::page_key(tenant, job_id, page.index);
    let Some(mut slot) = state
        .in_flight
        .claim(&slot_key, Duration::from_secs(10))
        .await
    else {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "page {} of job {job_id} is being stored by another stream",
                page.index
            ),
        ));
    };

    // The network stage: frames from QUIC into the pipeline's bounded queue. When the queue
    // is full this loop stops reading, QUIC stops granting credit, and the scanner waits.
    let (tx, rx) = mpsc::channel::<PageInput>(INPUT_QUEUE);
    let pipeline = state.pipeline.clone();
    let (t, j, entry) = (tenant.to_string(), job_id.to_string(), page.clone());
    let ingest = tokio::spawn(async move {
        pipeline
            .ingest_page_after((prior, digest_at), &t, &j, entry, rx)
            .await
    });
    let feed = Feed {
        state,
        device: &principal.device_id,
        tenant,
        flow,
        digest_at,
    };
    let (forwarded, received) = feed.forward(reader, &mut slot, tx).await;
    if let Forwarded::Starved = forwarded {
        // Stopping the stream gives its buffered bytes' credit back to the connection at
        // once; the pipeline abandons the page when it takes it (the slot is held until
        // then, so that the scanner's next try does not race it).
        reader.stop();
        let _ = ingest.await;
        return Err(Refusal::new(
            ErrorCode::Busy,
            format!(
                "page {} waited for the pipeline while pages ahead of it on this connection \
                 could get no bytes: send it again",
                page.index
            ),
        ));
    }
    let result = ingest.await.expect("ingest task panicked");
    if let Forwarded::Superseded = forwarded {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "page {} of job {job_id} was superseded by a newer upload of it",
                page.index
            ),
        ));
    }
    if let Forwarded::Malformed(r) = forwarded {
        return Err(r);
    }
    let receipt = match result {
        Ok(r) => r,
        Err(PipelineError::Abandoned) if !matches!(forwarded, Forwarded::Ended) => {
            return Err(Refusal::new(
                ErrorCode::Truncated,
                format!(
                "page {} truncated: the stream ended after {received} of {} bytes without PageEnd",
                page.index, page.size
            ),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if receipt.already_stored {
        reader.stop();
    }
    let stored = crate::meta::StoredPage {
        tenant: tenant.to_string(),
        job: job_id.to_string(),
        entry: receipt.entry.clone(),
        object_key: receipt.object_key.clone(),
        stored_bytes: receipt.stored_bytes,
        upload,
        holder: Some(principal.device_id.clone()),
    };
    match state.recorder.record(stored).await {
        Ok(()) => open.recorded(tenant, job_id, page.index),
        Err(crate::meta::MetaError::NotHeld { .. }) => {
            open.close(tenant, job_id);
            if !receipt.already_stored {
                discard(state, tenant, &receipt.object_key).await;
            }
            return Err(super::jobs::why_not_held(state, principal, at, page.index).await);
        }
        Err(e) => return Err(e.into()),
    }
    acknowledge(state, tenant, job_id, &receipt, began, send).await
}

/// How the network stage of a page ended.
enum Forwarded {
    /// The page's end reached the pipeline.
    Ended,
    /// The stream ended without it, or the pipeline stopped taking bytes (the page was
    /// already stored, or it was refused): the pipeline's result says which.
    Stopped,
    /// A newer upload of the same page took its slot.
    Superseded,
    /// The connection starved before the pipeline took a byte of the page.
    Starved,
    /// A frame that does not belong in a page, or one that could not be read.
    Malformed(Refusal),
}

/// What the network stage of one page needs to know.
struct Feed<'a> {
    state: &'a State,
    device: &'a str,
    tenant: &'a str,
    flow: &'a crate::windows::Flow,
    digest_at: DigestAt,
}

impl Feed<'_> {
    /// Moves a page's frames from its stream into the pipeline's queue until the page's end,
    /// the stream's end, or a reason to stop; returns how it ended and the bytes received.
    async fn forward(
        &self,
        reader: &mut FrameReader,
        slot: &mut crate::slots::Slot<'_>,
        tx: mpsc::Sender<PageInput>,
    ) -> (Forwarded, u64) {
        let mut received = 0u64;
        let mut chunks_sent = 0usize;
        loop {
            let next = {
                let _awaiting = self.flow.awaiting();
                tokio::select! {
                    next = reader.next() => next,
                    _ = slot.superseded.changed() => return (Forwarded::Superseded, received),
                }
            };
            let b = match next {
                Ok(Some(Frame::Data(b))) => b,
                Ok(Some(end @ (Frame::PageEnd | Frame::PageEndDigest(_)))) => {
                    return match self.digest_of(end) {
                        Ok(after) => {
                            let _ = tx.send(PageInput::End(after)).await;
                            (Forwarded::Ended, received)
                        }
                        Err(r) => (Forwarded::Malformed(r), received),
                    };
                }
                Ok(Some(other)) => {
                    let why = format!(
                        "{} inside a page; expected Data or the page's end",
                        frame_name(&other)
                    );
                    return (
                        Forwarded::Malformed(Refusal::new(ErrorCode::Malformed, why)),
                        received,
                    );
                }
                Ok(None) => return (Forwarded::Stopped, received),
                Err(e) => {
                    let why = Refusal::new(ErrorCode::Malformed, e.to_string());
                    return (Forwarded::Malformed(why), received);
                }
            };
            received += b.len() as u64;
            self.state
                .limits
                .pace_bytes(self.device, self.tenant, b.len())
                .await;
            // A page the pipeline has not taken a byte of yet gives its place back if its
            // connection starves (see `windows::Flow`).
            let untaken = chunks_sent == INPUT_QUEUE - tx.capacity();
            tokio::select! {
                biased;
                sent = tx.send(PageInput::Data(b)) => if sent.is_err() {
                    return (Forwarded::Stopped, received);
                },
                () = self.flow.starved(), if untaken => return (Forwarded::Starved, received),
            }
            chunks_sent += 1;
        }
    }

    /// The digest a page's end frame carries, if the page was begun with its digest after
    /// the bytes; an end that does not match how the page was begun is malformed.
    fn digest_of(&self, end: Frame) -> Result<Option<[u8; 32]>, Refusal> {
        match (end, self.digest_at) {
            (Frame::PageEnd, DigestAt::Start) => Ok(None),
            (Frame::PageEndDigest(d), DigestAt::End) => Ok(Some(d)),
            (other, _) => Err(Refusal::new(
                ErrorCode::Malformed,
                format!(
                    "{} ends a page begun with {}",
                    frame_name(&other),
                    match self.digest_at {
                        DigestAt::Start => "PagePut (digest before the bytes)",
                        DigestAt::End => "PagePutDigestAfter (digest after the bytes)",
                    }
                ),
            )),
        }
    }
}

/// Deletes the object of a page whose record was refused (its job was aborted or committed,
/// or its device disabled, while it was being stored), so that no unrecorded object blocks
/// the job id's next use. One still in the spool (`ack = "spooled"`) is delivered later
/// anyway; that is logged.
async fn discard(state: &State, tenant: &str, key: &str) {
    if state.pipeline.spool.pending(key).is_some() {
        warn!(
            tenant,
            key, "a refused page is still in the spool; it is delivered unrecorded"
        );
        return;
    }
    for store in state.pipeline.copies_for(tenant) {
        if let Err(e) = store.delete(key).await {
            warn!(tenant, key, store = store.name(), error = %e, "could not delete the object of a refused page");
        }
    }
}

/// Logs the stored page, tells the scanner, and counts it.
async fn acknowledge(
    state: &State,
    tenant: &str,
    job_id: &str,
    receipt: &quire_pipeline::Receipt,
    began: std::time::Instant,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    info!(
        tenant,
        job = job_id,
        page = receipt.entry.index,
        bytes = receipt.entry.size,
        stored = receipt.stored_bytes,
        again = receipt.already_stored,
        "page stored"
    );
    reply(
        send,
        &Frame::PageStored {
            index: receipt.entry.index,
            sha256: receipt.entry.sha256,
        },
    )
    .await?;
    state.metrics.page_stored(tenant, receipt, began.elapsed());
    Ok(())
}
