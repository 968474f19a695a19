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
    let mut received = 0u64;
    let mut protocol_error: Option<Refusal> = None;
    let mut saw_end = false;
    let mut superseded = false;
    let mut starved = false;
    let mut chunks_sent = 0usize;
    loop {
        let next = {
            let _awaiting = flow.awaiting();
            tokio::select! {
                next = reader.next() => next,
                _ = slot.superseded.changed() => {
                    superseded = true;
                    break;
                }
            }
        };
        match next {
            Ok(Some(Frame::Data(b))) => {
                received += b.len() as u64;
                state
                    .limits
                    .pace_bytes(&principal.device_id, tenant, b.len())
                    .await;
                // A page the pipeline has not taken a byte of yet gives its place back if
                // its connection starves (see `windows::Flow`).
                let untaken = chunks_sent == INPUT_QUEUE - tx.capacity();
                let sent = tokio::select! {
                    biased;
                    sent = tx.send(PageInput::Data(b)) => sent.is_ok(),
                    () = flow.starved(), if untaken => {
                        starved = true;
                        false
                    }
                };
                if !sent {
                    break; // the pipeline finished early (already stored, or refused)
                }
                chunks_sent += 1;
            }
            Ok(Some(end @ (Frame::PageEnd | Frame::PageEndDigest(_)))) => {
                let after = match (end, digest_at) {
                    (Frame::PageEnd, DigestAt::Start) => None,
                    (Frame::PageEndDigest(d), DigestAt::End) => Some(d),
                    (other, _) => {
                        protocol_error = Some(Refusal::new(
                            ErrorCode::Malformed,
                            format!(
                                "{} ends a page begun with {}",
                                frame_name(&other),
                                match digest_at {
                                    DigestAt::Start => "PagePut (digest before the bytes)",
                                    DigestAt::End => "PagePutDigestAfter (digest after the bytes)",
                                }
                            ),
                        ));
                        break;
                    }
                };
                saw_end = true;
                let _ = tx.send(PageInput::End(after)).await;
                break;
            }
            Ok(Some(other)) => {
                protocol_error = Some(Refusal::new(
                    ErrorCode::Malformed,
                    format!(
                        "{} inside a page; expected Data or the page's end",
                        frame_name(&other)
                    ),
                ));
                break;
            }
            Ok(None) => break,
            Err(e) => {
                protocol_error = Some(Refusal::new(ErrorCode::Malformed, e.to_string()));
                break;
            }
        }
    }
    drop(tx);
    if starved {
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
    if superseded {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "page {} of job {job_id} was superseded by a newer upload of it",
                page.index
            ),
        ));
    }
    if let Some(r) = protocol_error {
        return Err(r);
    }
    let receipt = match result {
        Ok(r) => r,
        Err(PipelineError::Abandoned) if !saw_end => {
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
