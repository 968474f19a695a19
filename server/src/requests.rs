//! One request stream: read the request frame, check who may ask it, answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, AuthError, DeviceRecord, Principal};
use bytes::Bytes;
use quire_codecs::manifest::Manifest;
use quire_codecs::wire::{AdminRequest, DeviceState, ErrorCode, Frame, PageEntry, Role, UploadId};

use crate::policy::{self, Action, Allowed, Denial, Subject};
use quire_pipeline::{keys, PageInput, PipelineError};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::meta::MetaError;
use crate::State;
use quire_net::stream::{write_data, write_frame, FrameReader};

/// A refusal sent back as an `Error` frame.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::new(e.code(), e.to_string())
    }
}

/// Stored objects found altered or damaged since the server started.
static CORRUPT_OBJECTS: AtomicU64 = AtomicU64::new(0);

impl From<PipelineError> for Refusal {
    fn from(e: PipelineError) -> Self {
        let message = match &e {
            PipelineError::Corrupt { key, .. } => {
                let what = keys::describe(key);
                let count = CORRUPT_OBJECTS.fetch_add(1, Ordering::Relaxed) + 1;
                error!(error = %e, object = %what, corrupt_objects_total = count, "stored object failed authentication");
                format!(
                    "the stored {what} failed authentication: it was altered or damaged at rest. Retrying will not help; the operator must restore it from a backup"
                )
            }
            // The server's own trouble: the detail (paths included) stays in the server log,
            // at error level; the scanner learns whose fault it is and what to do.
            PipelineError::ServerFull(_) => {
                error!(error = %e, "out of disk space; pages are refused until there is room");
                "the server is out of disk space; not your fault, retry later (the operator has been told)".to_string()
            }
            PipelineError::Spool(_) | PipelineError::Undeliverable(_) => {
                error!(error = %e, "cannot write to the spool");
                "the server could not keep the page on its disk; retry later (the operator has been told)".to_string()
            }
            PipelineError::Store(_) => {
                warn!(error = %e, "object store failure");
                "the object store did not take the page; retry later".to_string()
            }
            PipelineError::Vault(_) => {
                error!(error = %e, "key vault failure");
                "the server cannot reach its key vault; retry later (the operator has been told)"
                    .to_string()
            }
            _ => e.to_string(),
        };
        Refusal::new(e.code(), message)
    }
}

impl From<crate::meta::MetaError> for Refusal {
    fn from(e: crate::meta::MetaError) -> Self {
        warn!(error = %e, "metadata failure");
        Refusal::new(ErrorCode::Internal, "internal error; see the server log")
    }
}

/// Runs a blocking metadata call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("metadata task panicked")
}

pub(super) async fn handle_stream(
    state: Arc<State>,
    principal: Arc<Principal>,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
) {
    let outcome = serve_request(&state, &principal, &mut send, &mut reader).await;
    if let Err(r) = outcome {
        debug!(device = %principal.device_id, code = ?r.code, message = %r.message, "request refused");
        reader.stop();
        let _ = write_frame(
            &mut send,
            &Frame::Error {
                code: r.code,
                message: r.message,
            },
        )
        .await;
    }
    let _ = send.finish();
}

async fn serve_request(
    state: &Arc<State>,
    principal: &Principal,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
) -> Result<(), Refusal> {
    let first = match reader.next().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(Refusal::new(ErrorCode::Malformed, "empty request stream")),
        Err(e) => return Err(Refusal::new(ErrorCode::Malformed, e.to_string())),
    };
    // Credentials can be disabled while a connection is open: check on every request.
    let meta = state.meta.clone();
    let device_id = principal.device_id.clone();
    let current = blocking(move || meta.device(&device_id)).await?;
    match current {
        Some(rec) if rec.state == DeviceState::Enabled => {}
        Some(rec) => {
            return Err(AuthError::DeviceDisabled {
                device: rec.device_id,
                state: rec.state.as_str(),
            }
            .into())
        }
        None => return Err(AuthError::UnknownDevice(principal.device_id.clone()).into()),
    }
    match first {
        Frame::JobOpen {
            tenant,
            job_id,
            upload,
        } => {
            allow(state, principal, &tenant, Action::JobStatus, "").await?;
            if principal.role == Role::Device {
                claim(state, principal, &tenant, &job_id, upload).await?;
            }
            job_open(state, &tenant, &job_id, send).await
        }
        Frame::PagePut {
            tenant,
            job_id,
            page,
            upload,
        } => {
            allow(state, principal, &tenant, Action::PagePut, "").await?;
            let job = claim(state, principal, &tenant, &job_id, upload).await?;
            if job.committed {
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    format!("job {job_id} is already committed; push new pages as a new job"),
                ));
            }
            let at = UploadRef {
                tenant: &tenant,
                job_id: &job_id,
                upload,
            };
            page_put(state, principal, &at, page, send, reader).await
        }
        Frame::JobCommit {
            tenant,
            job_id,
            page_count,
            upload,
        } => {
            allow(state, principal, &tenant, Action::JobCommit, "").await?;
            claim(state, principal, &tenant, &job_id, upload).await?;
            job_commit(state, &tenant, &job_id, page_count, send).await
        }
        Frame::JobGet {
            tenant,
            job_id,
            page,
            reason,
        } => {
            allow(state, principal, &tenant, Action::JobRead, &reason).await?;
            let detail = format!(
                "job={job_id} page={} reason={reason}",
                page.map_or("all".to_string(), |p| p.to_string())
            );
            // The read is on record before a byte of the document leaves.
            audited(state, principal, "document.read", &tenant, &detail, async {
                job_get(state, &tenant, &job_id, page, send).await
            })
            .await
        }
        Frame::Admin(req) => admin(state, principal, req, send).await,
        other => Err(Refusal::new(
            ErrorCode::Malformed,
            format!("{} is not a request frame", frame_name(&other)),
        )),
    }
}

/// The job, and the upload pushing it, that a page names.
struct UploadRef<'a> {
    tenant: &'a str,
    job_id: &'a str,
    upload: Option<UploadId>,
}

/// Claims a job for the device's upload before any of its pages is touched: a job id
/// another device or another upload is pushing is refused, so two uploads never mix (see
/// `meta/jobs.rs`).
async fn claim(
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
    match blocking(move || meta.claim_job(&t, &j, &d, upload)).await {
        Ok(row) => Ok(row),
        Err(e @ (MetaError::Owned { .. } | MetaError::OtherUpload { .. })) => {
            Err(Refusal::new(ErrorCode::Conflict, e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Decides `action` on `tenant` for `principal` (see [`policy`]), looking up the grant an
/// operator or support partner may hold.
async fn allow(
    state: &State,
    principal: &Principal,
    tenant: &str,
    action: Action,
    reason: &str,
) -> Result<Allowed, Refusal> {
    let grant = match principal.role {
        Role::Operator | Role::SupportPartner => {
            let (meta, t, d) = (
                state.meta.clone(),
                tenant.to_string(),
                principal.device_id.clone(),
            );
            blocking(move || meta.grant(&t, &d))
                .await?
                .is_some_and(|g| g.expires_unix > unix_now())
        }
        _ => false,
    };
    let subject = Subject {
        role: principal.role,
        own_tenant: principal.tenant == tenant,
        grant,
        reason: !reason.trim().is_empty(),
    };
    policy::decide(subject, action).map_err(|d| denial(d, principal, tenant))
}

fn denial(d: Denial, principal: &Principal, tenant: &str) -> Refusal {
    let message = match d {
        Denial::TenantMismatch => {
            return AuthError::TenantMismatch {
                requested: tenant.to_string(),
            }
            .into()
        }
        Denial::Hidden => format!("tenant {tenant} not found"),
        Denial::GrantRequired => format!(
            "reading a tenant's documents as {} needs an active grant of the tenant (tenant-admin: admin grant create)",
            principal.role.as_str()
        ),
        Denial::Forbidden { needed } => format!("this request needs the {needed} role"),
        Denial::ReasonRequired => format!(
            "a {} must state a reason (--reason); it is recorded in the audit log",
            principal.role.as_str()
        ),
    };
    Refusal::new(d.code(), message)
}

/// Runs `work` between two audit records: `started`, synced before anything happens (if it
/// cannot be written, `work` does not run: fail closed), and the outcome after. A failure to
/// record the outcome of work that is done is logged for the operator, not the caller's.
async fn audited(
    state: &State,
    principal: &Principal,
    action: &str,
    tenant: &str,
    detail: &str,
    work: impl std::future::Future<Output = Result<(), Refusal>>,
) -> Result<(), Refusal> {
    audit(state, principal, action, tenant, detail, "started")?;
    let outcome = work.await;
    let result = match &outcome {
        Ok(()) => "ok".to_string(),
        Err(r) => format!("refused: {}", r.message),
    };
    let _ = audit(state, principal, action, tenant, detail, &result);
    outcome
}

/// Appends an audit record, durably; if it cannot be written the request is refused (fail
/// closed) and the failure is logged at error level.
fn audit(
    state: &State,
    principal: &Principal,
    action: &str,
    tenant: &str,
    detail: &str,
    outcome: &str,
) -> Result<(), Refusal> {
    state
        .audit
        .record(
            &principal.device_id,
            principal.role.as_str(),
            action,
            tenant,
            detail,
            outcome,
        )
        .map_err(|e| {
            error!(error = %e, action, tenant, "cannot write the audit log; request refused");
            Refusal::new(
                if quire_pipeline::out_of_space(&e) {
                    ErrorCode::ServerFull
                } else {
                    ErrorCode::Busy
                },
                "the server cannot record this request in its audit log, so it was not carried out; retry later (the operator has been told)",
            )
        })
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello { .. } => "Hello",
        Frame::Data(_) => "Data",
        Frame::PageEnd => "PageEnd",
        _ => "this frame",
    }
}

async fn reply(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), Refusal> {
    write_frame(send, frame)
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
}

/// A job's record and its stored pages, read off the async workers.
async fn job_and_pages(
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

async fn job_open(
    state: &State,
    tenant: &str,
    job_id: &str,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let (job, pages) = job_and_pages(state, tenant, job_id).await?;
    reply(
        send,
        &Frame::JobStatus {
            committed: job.is_some_and(|j| j.committed),
            pages,
        },
    )
    .await
}

async fn page_put(
    state: &Arc<State>,
    principal: &Principal,
    at: &UploadRef<'_>,
    page: PageEntry,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
) -> Result<(), Refusal> {
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
    let (tx, rx) = mpsc::channel::<PageInput>(16);
    let pipeline = state.pipeline.clone();
    let (t, j, entry) = (tenant.to_string(), job_id.to_string(), page.clone());
    let ingest = tokio::spawn(async move { pipeline.ingest_page(&t, &j, entry, rx).await });
    let mut received = 0u64;
    let mut protocol_error: Option<Refusal> = None;
    let mut saw_end = false;
    let mut superseded = false;
    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            _ = slot.superseded.changed() => {
                superseded = true;
                break;
            }
        };
        match next {
            Ok(Some(Frame::Data(b))) => {
                received += b.len() as u64;
                state
                    .limits
                    .pace_bytes(&principal.device_id, tenant, b.len())
                    .await;
                if tx.send(PageInput::Data(b)).await.is_err() {
                    break; // the pipeline finished early (already stored, or refused)
                }
            }
            Ok(Some(Frame::PageEnd)) => {
                saw_end = true;
                let _ = tx.send(PageInput::End).await;
                break;
            }
            Ok(Some(other)) => {
                protocol_error = Some(Refusal::new(
                    ErrorCode::Malformed,
                    format!(
                        "{} inside a page; expected Data or PageEnd",
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
    let (meta, t, j, r) = (
        state.meta.clone(),
        tenant.to_string(),
        job_id.to_string(),
        receipt.clone(),
    );
    blocking(move || meta.record_page(&t, &j, &r.entry, &r.object_key, r.stored_bytes, upload))
        .await?;
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
    .await
}

async fn job_commit(
    state: &State,
    tenant: &str,
    job_id: &str,
    page_count: u32,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let (job, pages) = job_and_pages(state, tenant, job_id).await?;
    let (meta, t, j) = (state.meta.clone(), tenant.to_string(), job_id.to_string());
    let foreign = blocking(move || meta.foreign_pages(&t, &j)).await?;
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
    let manifest = Manifest {
        job_id: job_id.to_string(),
        pages,
    };
    state.pipeline.write_manifest(tenant, &manifest).await?;
    let bytes = manifest.total_bytes();
    let (meta, t, j) = (state.meta.clone(), tenant.to_string(), job_id.to_string());
    blocking(move || meta.commit_job(&t, &j, page_count, bytes)).await?;
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

async fn job_get(
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

/// The audit log's view of a request: action, tenant, detail.
fn describe(req: &AdminRequest) -> (&'static str, String, String) {
    match req {
        AdminRequest::TenantCreate { name } => ("tenant.create", name.clone(), String::new()),
        AdminRequest::DeviceCreate {
            tenant,
            device_id,
            role,
            enabled,
        } => (
            "device.create",
            tenant.clone(),
            format!(
                "device={device_id} role={} enabled={enabled}",
                role.as_str()
            ),
        ),
        AdminRequest::DeviceSetState { device_id, state } => (
            "device.set-state",
            String::new(),
            format!("device={device_id} state={}", state.as_str()),
        ),
        AdminRequest::DeviceList { tenant } => ("device.list", tenant.clone(), String::new()),
        AdminRequest::KeyRotate { tenant } => ("key.rotate", tenant.clone(), String::new()),
        AdminRequest::KeyRewrap { tenant } => ("key.rewrap", tenant.clone(), String::new()),
        AdminRequest::TenantShred { tenant } => ("tenant.shred", tenant.clone(), String::new()),
        AdminRequest::TokenCreate { tenant, ttl_secs } => (
            "token.create",
            tenant.clone(),
            format!("ttl_secs={ttl_secs}"),
        ),
        AdminRequest::Status { tenant, reason } => {
            ("status", tenant.clone(), format!("reason={reason}"))
        }
        AdminRequest::GrantCreate {
            tenant,
            partner,
            hours,
            reason,
        } => (
            "grant.create",
            tenant.clone(),
            format!("partner={partner} hours={hours} reason={reason}"),
        ),
        AdminRequest::GrantRevoke { tenant, partner } => {
            ("grant.revoke", tenant.clone(), format!("partner={partner}"))
        }
        AdminRequest::DeviceRotate { device_id } => (
            "device.rotate",
            String::new(),
            format!("device={device_id}"),
        ),
        AdminRequest::HoldSet {
            tenant,
            job,
            reason,
        } => (
            "hold.set",
            tenant.clone(),
            format!("job={} reason={reason}", job.as_deref().unwrap_or("*")),
        ),
        AdminRequest::HoldRelease { tenant, job } => (
            "hold.release",
            tenant.clone(),
            format!("job={}", job.as_deref().unwrap_or("*")),
        ),
        AdminRequest::DeliveryList { tenant } => ("delivery.list", tenant.clone(), String::new()),
        AdminRequest::DeliveryAck { tenant, job_id } => {
            ("delivery.ack", tenant.clone(), format!("job={job_id}"))
        }
        AdminRequest::JobAbort { tenant, job_id } => {
            ("job.abort", tenant.clone(), format!("job={job_id}"))
        }
    }
}

async fn admin(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let (action, tenant, detail) = describe(&req);
    audited(state, principal, action, &tenant, &detail, async {
        admin_request(state, principal, req, send).await
    })
    .await
}

async fn admin_request(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let meta = state.meta.clone();
    match req {
        AdminRequest::TenantCreate { name } => {
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
            blocking(move || meta.set_device_state(&id, new_state))
                .await
                .map_err(revoked_is_conflict)?;
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
        AdminRequest::GrantCreate {
            tenant,
            partner,
            hours,
            reason,
        } => {
            allow(state, principal, &tenant, Action::GrantCreate, "").await?;
            if reason.trim().is_empty() || hours == 0 || hours > 24 * 90 {
                return Err(Refusal::new(
                    ErrorCode::Malformed,
                    "a grant needs a reason and 1 to 2160 hours",
                ));
            }
            let m = meta.clone();
            let p = partner.clone();
            let rec = blocking(move || m.device(&p)).await?;
            // Support partners of any company, and the tenant's own operators, may be granted.
            let grantable = rec.is_some_and(|r| {
                r.role == Role::SupportPartner || (r.role == Role::Operator && r.tenant == tenant)
            });
            if !grantable {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("support partner or operator {partner} not found"),
                ));
            }
            let grant = crate::meta::Grant {
                expires_unix: unix_now() + u64::from(hours) * 3600,
                reason,
                granted_by: principal.device_id.clone(),
            };
            let (t, p) = (tenant.clone(), partner.clone());
            blocking(move || meta.put_grant(&t, &p, &grant)).await?;
            reply(send, &Frame::Done).await
        }
        AdminRequest::GrantRevoke { tenant, partner } => {
            allow(state, principal, &tenant, Action::GrantRevoke, "").await?;
            let (t, p) = (tenant.clone(), partner.clone());
            if !blocking(move || meta.remove_grant(&t, &p)).await? {
                return Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("no grant for {partner} on tenant {tenant}"),
                ));
            }
            reply(send, &Frame::Done).await
        }
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
                    crate::meta::now_unix(),
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
            let rec = blocking(move || meta.rotate_secret(&id, hash))
                .await
                .map_err(revoked_is_conflict)?;
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
            reply(
                send,
                &Frame::AdminKey {
                    tenant,
                    version,
                    rewrapped: 0,
                },
            )
            .await
        }
        AdminRequest::KeyRewrap { tenant } => {
            allow(state, principal, &tenant, Action::KeyRewrap, "").await?;
            tenant_exists(state, &tenant).await?;
            let r = state.pipeline.rewrap_tenant(&tenant).await?;
            info!(tenant = %tenant, version = r.version, rewrapped = r.rewrapped, by = %principal.device_id, "tenant data keys re-wrapped");
            reply(
                send,
                &Frame::AdminKey {
                    tenant,
                    version: r.version,
                    rewrapped: r.rewrapped,
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
    }
}

/// A revoked device stays revoked: changing it is a conflict with its state, explained.
fn revoked_is_conflict(e: crate::meta::MetaError) -> Refusal {
    match e {
        crate::meta::MetaError::Revoked(_) => Refusal::new(ErrorCode::Conflict, e.to_string()),
        other => other.into(),
    }
}

/// Refuses a request about a tenant that does not exist, as not found.
async fn tenant_exists(state: &State, tenant: &str) -> Result<(), Refusal> {
    let (meta, t) = (state.meta.clone(), tenant.to_string());
    if blocking(move || meta.tenant_exists(&t)).await? {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::NotFound,
            format!("tenant {tenant} not found"),
        ))
    }
}

/// Tokens are stored only as this digest.
pub(super) fn token_hash(token: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"quire/1 enrollment token");
    h.update(token);
    h.finalize().into()
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
