//! Administrative requests about a tenant's jobs: legal holds, deliveries, abandoned uploads
//! and the job listing.

use super::*;

/// Legal holds, delivery listings and acknowledgements, aborting an upload, listing jobs.
pub(super) async fn holds(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let meta = state.meta.clone();
    match req {
        AdminRequest::HoldSet {
            tenant,
            job,
            reason,
        } => {
            allow(state, principal, &tenant, Action::HoldSet, "").await?;
            if reason.trim().is_empty() {
                return Err(Refusal::new(
                    ErrorCode::Malformed,
                    "a legal hold must state its reason",
                ));
            }
            let hold = crate::meta::Hold {
                reason,
                by: principal.device_id.clone(),
                since_unix: crate::meta::now_unix(),
            };
            blocking(move || meta.set_hold(&tenant, job.as_deref(), Some(&hold))).await?;
            reply(send, &Frame::Done).await
        }
        AdminRequest::HoldRelease { tenant, job } => {
            allow(state, principal, &tenant, Action::HoldRelease, "").await?;
            let what = job.clone().unwrap_or_else(|| format!("tenant {tenant}"));
            if !blocking(move || meta.set_hold(&tenant, job.as_deref(), None)).await? {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("no legal hold on {what}"),
                ));
            }
            reply(send, &Frame::Done).await
        }
        AdminRequest::DeliveryList { tenant } => {
            allow(state, principal, &tenant, Action::DeliveryList, "").await?;
            let jobs = blocking(move || -> Result<_, crate::meta::MetaError> {
                let mut out = Vec::new();
                for (job_id, row) in meta.jobs(&tenant)? {
                    // A consumer that acknowledges what it got asks again for the rest.
                    if out.len() == quire_codecs::lists::MAX_LIST_ROWS {
                        break;
                    }
                    if row.committed && row.delivered_unix.is_none() && row.deleted_unix.is_none() {
                        let held = meta.hold_on(&tenant, &job_id)?.is_some();
                        out.push(quire_codecs::wire::JobInfo {
                            job_id,
                            pages: row.page_count,
                            bytes: row.bytes,
                            committed_unix: row.committed_unix.max(0) as u64,
                            held,
                        });
                    }
                }
                Ok(out)
            })
            .await?;
            reply(send, &Frame::AdminJobs(jobs)).await
        }
        AdminRequest::JobList { tenant, job } => {
            allow(state, principal, &tenant, Action::JobList, "").await?;
            let jobs = blocking(move || job_states(meta.as_ref(), &tenant, job.as_deref())).await?;
            reply(send, &Frame::AdminJobStates(jobs)).await
        }
        AdminRequest::DeliveryAck { tenant, job_id } => {
            allow(state, principal, &tenant, Action::DeliveryAck, "").await?;
            let (t, j) = (tenant.clone(), job_id.clone());
            let row = blocking(move || meta.mark_delivered(&t, &j, crate::meta::now_unix()))
                .await
                .map_err(|e| match e {
                    crate::meta::MetaError::NotFound(_) => Refusal::new(
                        ErrorCode::NotFound,
                        format!("job {job_id} not found or not committed"),
                    ),
                    other => other.into(),
                })?;
            let policy = state.retention.get(&tenant).copied().unwrap_or_default();
            let answer = if row.deleted_unix.is_some() {
                Frame::AdminDelivered {
                    deleted_objects: 0,
                    kept_because: "already deleted".into(),
                }
            } else {
                match policy.due(
                    row.committed_unix,
                    row.delivered_unix,
                    state.clock.now_unix(),
                ) {
                    Some(why) => {
                        match crate::sweep::delete_job(
                            state,
                            &tenant,
                            &job_id,
                            &why,
                            &principal.device_id,
                        )
                        .await
                        .map_err(|e| Refusal::new(ErrorCode::StoreUnavailable, e))?
                        {
                            crate::sweep::Deletion::Deleted(n) => Frame::AdminDelivered {
                                deleted_objects: n,
                                kept_because: String::new(),
                            },
                            crate::sweep::Deletion::Held(reason) => Frame::AdminDelivered {
                                deleted_objects: 0,
                                kept_because: format!("legal hold: {reason}"),
                            },
                        }
                    }
                    None => Frame::AdminDelivered {
                        deleted_objects: 0,
                        kept_because: format!("retention policy {policy}"),
                    },
                }
            };
            reply(send, &answer).await
        }
        AdminRequest::JobAbort { tenant, job_id } => {
            allow(state, principal, &tenant, Action::JobAbort, "").await?;
            let n = crate::sweep::abort_job(state, &tenant, &job_id)
                .await
                .map_err(|e| match e {
                    crate::meta::MetaError::NotFound(_) => {
                        Refusal::new(ErrorCode::NotFound, format!("job {job_id} not found"))
                    }
                    e @ crate::meta::MetaError::Committed(_) => {
                        Refusal::new(ErrorCode::Conflict, e.to_string())
                    }
                    other => other.into(),
                })?;
            info!(tenant = %tenant, job = %job_id, pages = n, by = %principal.device_id, "uncommitted job aborted");
            reply(send, &Frame::Done).await
        }
        other => Err(misrouted(&other)),
    }
}

/// The rows of `quire admin jobs`: every job of the tenant (at most a listing's worth), or the
/// one named. An open job's pages and bytes are those stored so far.
fn job_states(
    meta: &dyn crate::meta::MetaStore,
    tenant: &str,
    only: Option<&str>,
) -> Result<Vec<quire_codecs::wire::JobState>, crate::meta::MetaError> {
    use quire_codecs::wire::{JobPhase, JobState};
    let rows = match only {
        Some(job) => match meta.job(tenant, job)? {
            Some(row) => vec![(job.to_string(), row)],
            None => return Err(crate::meta::MetaError::NotFound(format!("job {job}"))),
        },
        None => meta.jobs(tenant)?,
    };
    let unix = |t: i64| t.max(0) as u64;
    let mut out = Vec::new();
    for (job_id, row) in rows.into_iter().take(quire_codecs::lists::MAX_LIST_ROWS) {
        let phase = match (row.committed, row.delivered_unix, row.deleted_unix) {
            (_, _, Some(_)) => JobPhase::Deleted,
            (true, Some(_), None) => JobPhase::Delivered,
            (true, None, None) => JobPhase::Committed,
            (false, _, None) => JobPhase::Open,
        };
        let (pages, bytes) = if row.committed || phase == JobPhase::Deleted {
            (row.page_count, row.bytes)
        } else {
            let pages = meta.pages(tenant, &job_id)?;
            (pages.len() as u32, pages.iter().map(|p| p.size).sum())
        };
        out.push(JobState {
            held: meta.hold_on(tenant, &job_id)?.is_some(),
            job_id,
            phase,
            pages,
            bytes,
            created_unix: unix(row.created_unix),
            committed_unix: if row.committed {
                unix(row.committed_unix)
            } else {
                0
            },
            delivered_unix: row.delivered_unix.map_or(0, unix),
            deleted_unix: row.deleted_unix.map_or(0, unix),
        });
    }
    Ok(out)
}
