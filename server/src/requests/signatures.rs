//! Signed manifests and the public keys that check them (see `signing.rs`).

use super::*;
use crate::signing;

pub(super) async fn signatures(
    state: &State,
    principal: &Principal,
    req: AdminRequest,
    send: &mut quinn::SendStream,
) -> Result<(), Refusal> {
    match req {
        AdminRequest::ManifestGet {
            tenant,
            job_id,
            reason,
        } => {
            // Names and digests of the job's pages: read as the pages themselves are.
            allow(state, principal, &tenant, Action::JobRead, &reason).await?;
            let doc = match signing::signed_manifest(&state.pipeline, &tenant, &job_id).await {
                Ok(Some(doc)) => doc,
                Ok(None) => {
                    return Err(Refusal::new(
                        ErrorCode::NotFound,
                        format!(
                            "job {job_id} was committed before manifests were signed (by an \
                             older Quire): it has no signature; its pages are still checked \
                             against their SHA-256 digests"
                        ),
                    ))
                }
                Err(PipelineError::NotFound(_)) => {
                    return Err(Refusal::new(
                        ErrorCode::NotFound,
                        format!("job {job_id} not found or not committed"),
                    ))
                }
                Err(e) => return Err(e.into()),
            };
            send_document(send, doc.to_json()).await
        }
        AdminRequest::SigningKeyExport { tenant } => {
            allow(state, principal, &tenant, Action::AuditRead, "").await?;
            tenant_exists(state, &tenant).await?;
            let now = signing::now_unix_ms();
            let keys = signing::export(&state.pipeline, &state.signing_keys, &tenant, now).await?;
            let doc = serde_json::json!({
                "type": "quire-signing-keys",
                "v": 1,
                "tenant": tenant,
                "keys": keys,
            });
            send_document(
                send,
                serde_json::to_string_pretty(&doc).expect("serialises"),
            )
            .await
        }
        other => Err(misrouted(&other)),
    }
}
