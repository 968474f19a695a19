//! One request stream: read the request frame, check who may ask it, answer.
//!
//! This module reads the request and puts it to the access [`crate::policy`]; the work is
//! done by concern: [`pages`] stores a page, [`jobs`] opens, commits and reads jobs, and
//! [`admin`] (with [`devices`], [`grants`] and [`holds`]) answers administrative requests.

mod admin;
mod audit_trail;
mod devices;
mod grants;
mod holds;
mod jobs;
mod key_versions;
mod open_jobs;
mod pages;
mod scrub;
mod signatures;

use admin::admin;
use jobs::{claim, claim_for_page, job_and_pages, job_commit, job_get, job_status, UploadRef};
pub(crate) use open_jobs::OpenJobs;
use pages::page_put;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, AuthError, DeviceRecord, Principal};
use bytes::Bytes;
use quire_codecs::manifest::Manifest;
use quire_codecs::wire::{AdminRequest, DeviceState, ErrorCode, Frame, PageEntry, Role, UploadId};

use crate::policy::{self, Action, Allowed, Denial, Subject};
use quire_pipeline::{keys, DigestAt, PageInput, PipelineError, Prior};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

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
        let (code, message) = e.refusal();
        if matches!(code, ErrorCode::StoreUnavailable | ErrorCode::Internal) {
            warn!(error = %e, "metadata failure");
        }
        Refusal::new(code, message)
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
    (principal, open, flow): (Arc<Principal>, Arc<OpenJobs>, Arc<crate::windows::Flow>),
    mut send: quinn::SendStream,
    mut reader: FrameReader,
) {
    let connection = Connection {
        principal: &principal,
        open: &open,
        flow: &flow,
    };
    let outcome = serve_request(&state, connection, &mut send, &mut reader).await;
    if let Err(r) = outcome {
        state.metrics.refused(r.code);
        if let Some(left_out) = state.refusal_log.take(std::time::Instant::now()) {
            info!(device = %principal.device_id, tenant = %principal.tenant, code = ?r.code, message = %r.message, left_out, "request refused");
        }
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

/// Who a request comes from, and what its connection remembers.
#[derive(Clone, Copy)]
struct Connection<'a> {
    principal: &'a Principal,
    open: &'a OpenJobs,
    flow: &'a crate::windows::Flow,
}

async fn serve_request(
    state: &Arc<State>,
    Connection {
        principal,
        open,
        flow,
    }: Connection<'_>,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
) -> Result<(), Refusal> {
    let first = match reader.next().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(Refusal::new(ErrorCode::Malformed, "empty request stream")),
        Err(e) => return Err(Refusal::new(ErrorCode::Malformed, e.to_string())),
    };
    let (first, digest_at) = page_put_digest_after(first);
    let new_work = matches!(first, Frame::JobOpen { .. } | Frame::PagePut { .. });
    let Some(_running) = state.drain.enter(new_work) else {
        return Err(Refusal::new(
            ErrorCode::Busy,
            "the server is shutting down: retry in a moment (it restarts, or another node \
             takes the page)",
        ));
    };
    // Credentials can be disabled while a connection is open: check on every request. A
    // scanner's page checks it in the metadata call that claims the job (`claim_for_page`)
    // or, for a job its connection opened, in the write recording it (`open_jobs.rs`).
    let page_from_device = principal.role == Role::Device && matches!(first, Frame::PagePut { .. });
    if !page_from_device {
        let meta = state.meta.clone();
        let device_id = principal.device_id.clone();
        let current = blocking(move || meta.device(&device_id)).await?;
        device_usable(current, &principal.device_id)?;
    }
    match first {
        Frame::JobOpen {
            tenant,
            job_id,
            upload,
        } => {
            allow(state, principal, &tenant, Action::JobStatus, "").await?;
            let claimed = match principal.role {
                Role::Device => Some(claim(state, principal, &tenant, &job_id, upload).await?),
                _ => None,
            };
            let (job, pages) = job_and_pages(state, &tenant, &job_id).await?;
            if claimed.is_some_and(|row| !row.committed) {
                open.open(&tenant, &job_id, upload, pages.iter().map(|p| p.index));
            }
            job_status(job, pages, send).await
        }
        Frame::PagePut {
            tenant,
            job_id,
            page,
            upload,
        } => {
            allow(state, principal, &tenant, Action::PagePut, "").await?;
            let known = match page_from_device {
                true => open.prior(&tenant, &job_id, upload, page.index),
                false => None,
            };
            let prior = match known {
                Some(prior) => prior,
                None => {
                    let (job, prior) = if page_from_device {
                        claim_for_page(state, principal, &tenant, &job_id, page.index, upload)
                            .await?
                    } else {
                        let job = claim(state, principal, &tenant, &job_id, upload).await?;
                        (job, Prior::Unknown)
                    };
                    if job.committed {
                        return Err(jobs::already_committed(&job_id));
                    }
                    prior
                }
            };
            let at = UploadRef {
                tenant: &tenant,
                job_id: &job_id,
                upload,
            };
            let connection = Connection {
                principal,
                open,
                flow,
            };
            page_put(
                state,
                connection,
                &at,
                (page, prior, digest_at),
                send,
                reader,
            )
            .await
        }
        Frame::JobCommit {
            tenant,
            job_id,
            page_count,
            upload,
        } => {
            allow(state, principal, &tenant, Action::JobCommit, "").await?;
            // Pages arriving from now on read the job again, and see it committed.
            open.close(&tenant, &job_id);
            claim(state, principal, &tenant, &job_id, upload).await?;
            // A job becomes the tenant's document only once this is on record.
            let detail = format!("job={job_id} pages={page_count}");
            audited(state, principal, "job.commit", &tenant, &detail, async {
                job_commit(state, &tenant, &job_id, page_count, send).await
            })
            .await
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

/// Refuses a device that is no longer enabled (or no longer known): its credential may have
/// been disabled or revoked while its connection stayed open.
fn device_usable(current: Option<DeviceRecord>, device_id: &str) -> Result<(), Refusal> {
    match current {
        Some(rec) if rec.state == DeviceState::Enabled => Ok(()),
        Some(rec) => Err(AuthError::DeviceDisabled {
            device: rec.device_id,
            state: rec.state.as_str(),
        }
        .into()),
        None => Err(AuthError::UnknownDevice(device_id.to_string()).into()),
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
    audit(state, principal, action, tenant, detail, "started").await?;
    let outcome = work.await;
    let result = match &outcome {
        Ok(()) => "ok".to_string(),
        Err(r) => format!("refused: {}", r.message),
    };
    let _ = audit(state, principal, action, tenant, detail, &result).await;
    outcome
}

/// Appends an audit record, durably; if it cannot be written the request is refused (fail
/// closed) and the failure is logged at error level. The write and its sync run on a
/// blocking thread: an fsync on an async worker would stall every connection it serves.
async fn audit(
    state: &State,
    principal: &Principal,
    action: &str,
    tenant: &str,
    detail: &str,
    outcome: &str,
) -> Result<(), Refusal> {
    state
        .audit
        .append(
            &principal.device_id,
            principal.role.as_str(),
            action,
            tenant,
            detail,
            outcome,
        )
        .await
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

/// A page whose digest comes after its bytes is served as a `PagePut` whose entry's digest
/// is not read ([`DigestAt::End`]) and whose end must carry the digest.
fn page_put_digest_after(first: Frame) -> (Frame, DigestAt) {
    match first {
        Frame::PagePutDigestAfter {
            tenant,
            job_id,
            index,
            name,
            size,
            upload,
        } => {
            let page = PageEntry {
                index,
                name,
                size,
                sha256: [0; 32],
            };
            let upload = Some(upload);
            let put = Frame::PagePut {
                tenant,
                job_id,
                page,
                upload,
            };
            (put, DigestAt::End)
        }
        other => (other, DigestAt::Start),
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello { .. } => "Hello",
        Frame::Data(_) => "Data",
        Frame::PageEnd => "PageEnd",
        Frame::PageEndDigest(_) => "PageEndDigest",
        _ => "this frame",
    }
}

async fn reply(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), Refusal> {
    write_frame(send, frame)
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
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

/// A request handed to a handler that does not answer it: a bug in `admin::route`.
fn misrouted(req: &AdminRequest) -> Refusal {
    error!(
        action = req.describe().action,
        "administrative request misrouted"
    );
    Refusal::new(ErrorCode::Internal, "internal error; see the server log")
}

/// A JSON document as Data frames, then Done.
async fn send_document(send: &mut quinn::SendStream, json: String) -> Result<(), Refusal> {
    let bytes = Bytes::from(json);
    for at in (0..bytes.len()).step_by(1 << 20) {
        let piece = bytes.slice(at..(at + (1 << 20)).min(bytes.len()));
        write_data(send, piece)
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    }
    reply(send, &Frame::Done).await
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
