//! Administrative requests about the audit trail itself: verify a tenant's chain, export it.

use super::*;
use crate::audit::verify::{self, TrailError};

impl From<TrailError> for Refusal {
    fn from(e: TrailError) -> Self {
        match e {
            TrailError::Store(e) => {
                warn!(error = %e, "object store failure reading audit checkpoints");
                Refusal::new(
                    ErrorCode::StoreUnavailable,
                    "the object store holding the audit checkpoints did not answer; retry later",
                )
            }
            TrailError::Vault(e) => e.into(),
            TrailError::Log(e) => {
                error!(error = %e, "cannot read the audit log");
                Refusal::new(
                    ErrorCode::Internal,
                    "the server cannot read its audit log (the operator has been told)",
                )
            }
        }
    }
}

pub(super) async fn audit_trail(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    match req {
        AdminRequest::AuditVerify { tenant } => {
            allow(state, principal, &tenant, Action::AuditRead, "").await?;
            tenant_exists(state, &tenant).await?;
            let report = verify::verify(state, &tenant).await?;
            if !report.problem.is_empty() {
                error!(tenant = %tenant, problem = %report.problem, "audit chain verification failed");
            }
            reply(send, &Frame::AdminAuditReport(report)).await
        }
        AdminRequest::AuditExport {
            tenant,
            since_unix_ms,
        } => {
            allow(state, principal, &tenant, Action::AuditRead, "").await?;
            tenant_exists(state, &tenant).await?;
            let (tx, mut rx) = mpsc::channel::<Bytes>(4);
            let producing = verify::export(state, &tenant, since_unix_ms, tx);
            let sending = async {
                while let Some(chunk) = rx.recv().await {
                    write_data(send, chunk)
                        .await
                        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
                }
                Ok::<(), Refusal>(())
            };
            let (produced, sent) = tokio::join!(producing, sending);
            produced?;
            sent?;
            reply(send, &Frame::Done).await
        }
        other => Err(misrouted(&other)),
    }
}
