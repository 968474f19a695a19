//! `scrub`: the tenant's stored objects read through and checked, findings streamed back.

use super::*;
use crate::scrub::{self, Finding, ScrubError};

pub(super) async fn scrub_request(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    let (tenant, after, max_mb_per_s, repair) = match req {
        AdminRequest::Scrub {
            tenant,
            after,
            max_mb_per_s,
        } => (tenant, after, max_mb_per_s, false),
        AdminRequest::ScrubRepair {
            tenant,
            after,
            max_mb_per_s,
        } => (tenant, after, max_mb_per_s, true),
        _ => return Err(misrouted(&req)),
    };
    if repair {
        // Writes stored ciphertext (never a document out), as a key rewrap does.
        allow(state, principal, &tenant, Action::KeyRewrap, "").await?;
    } else {
        // Reads no document out: allowed as listing the tenant's jobs is.
        allow(state, principal, &tenant, Action::JobList, "").await?;
    }
    tenant_exists(state, &tenant).await?;
    let (tx, mut rx) = mpsc::channel::<Finding>(64);
    let rate = u64::from(max_mb_per_s) * 1_000_000;
    let actor = (principal.device_id.as_str(), principal.role.as_str());
    let working = scrub::scrub(
        state,
        &tenant,
        after.as_deref(),
        rate,
        repair.then_some(actor),
        tx,
    );
    let sending = async {
        while let Some(finding) = rx.recv().await {
            if !matches!(finding, Finding::Progress { .. } | Finding::Done { .. }) {
                warn!(tenant = %tenant, finding = ?finding, "scrub finding");
            }
            let mut line = serde_json::to_vec(&finding).expect("a finding serialises");
            line.push(b'\n');
            write_data(send, Bytes::from(line))
                .await
                .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        }
        Ok::<(), Refusal>(())
    };
    let (worked, sent) = tokio::join!(working, sending);
    sent?;
    match worked {
        Ok(()) => reply(send, &Frame::Done).await,
        Err(ScrubError::Meta(e)) => Err(e.into()),
        Err(ScrubError::Pipeline(e)) => Err(e.into()),
        Err(ScrubError::Gone) => Err(Refusal::new(ErrorCode::Internal, "scrub output closed")),
    }
}
