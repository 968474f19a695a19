//! The first stream of every connection: `Hello` authenticates the device, `Enroll` redeems a
//! one-time token for a new pending device. Either is answered on that stream, and within the
//! hello deadline the caller enforces.

use quire_codecs::wire::{ErrorCode, Frame};
use quire_net::stream::{write_frame, FrameReader};
use tracing::{error, info, warn};

use crate::auth::{self, Principal};
use crate::edge::State;
use crate::requests;

/// Reads the first stream: `Hello` authenticates (`Some(principal)`), `Enroll` registers a
/// new pending device (`None`).
pub(crate) async fn authenticate(
    state: &State,
    conn: &quinn::Connection,
) -> Result<Option<Principal>, String> {
    // The caller bounds all of this by the hello deadline.
    let (mut send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
    let mut reader = FrameReader::requests(recv);
    let hello = reader.next().await;
    let refuse = |code: ErrorCode, message: String| (code, message);
    let result = match hello {
        Ok(Some(Frame::Hello {
            tenant,
            device_id,
            secret,
        })) => match state.meta.device(&device_id) {
            Ok(rec) => auth::authenticate(rec.as_ref(), &device_id, &tenant, &secret)
                .map_err(|e| refuse(e.code(), e.to_string())),
            Err(e) => {
                warn!(error = %e, device = %device_id, "cannot authenticate: metadata failure");
                Err(e.refusal())
            }
        },
        Ok(Some(Frame::Enroll { token, device_id })) => {
            let secret = quire_net::random_secret();
            let hash = requests::token_hash(&token);
            let meta = state.meta.clone();
            let (id, secret_hash) = (device_id.clone(), auth::hash_secret(&secret));
            // On the record before the token is spent; no record, no enrollment.
            state
                .audit
                .append(
                    &device_id,
                    "device",
                    "device.enroll",
                    "",
                    "token presented",
                    "started",
                )
                .await
                .map_err(|e| format!("enrollment not recorded in the audit log: {e}"))?;
            let outcome = tokio::task::spawn_blocking(move || {
                meta.enroll(&hash, requests::unix_now(), &id, secret_hash)
            })
            .await
            .map_err(|e| e.to_string())?;
            let (tenant, result) = match &outcome {
                Ok(rec) => (rec.tenant.clone(), "ok".to_string()),
                Err(e) => (String::new(), format!("refused: {e}")),
            };
            let recorded = state
                .audit
                .append(&device_id, "device", "device.enroll", &tenant, "", &result)
                .await;
            if let Err(e) = recorded {
                error!(error = %e, device = %device_id, "cannot record an enrollment's outcome");
            }
            let reply = match outcome {
                Ok(rec) => {
                    info!(device = %rec.device_id, tenant = %rec.tenant, "device enrolled; pending until an administrator enables it");
                    Frame::AdminIssued {
                        device_id: rec.device_id,
                        tenant: rec.tenant,
                        role: rec.role,
                        secret: *secret,
                    }
                }
                Err(crate::meta::MetaError::BadToken) => Frame::Error {
                    code: ErrorCode::BadCredential,
                    message: "the enrollment token is unknown, already used, or expired".into(),
                },
                Err(crate::meta::MetaError::Exists(what)) => Frame::Error {
                    code: ErrorCode::Conflict,
                    message: format!("{what} already exists; choose another --device-id"),
                },
                Err(e) => {
                    warn!(error = %e, "enrollment failed");
                    Frame::Error {
                        code: ErrorCode::Internal,
                        message: "internal error; see the server log".into(),
                    }
                }
            };
            let failed = matches!(reply, Frame::Error { .. });
            let _ = write_frame(&mut send, &reply).await;
            let _ = send.finish();
            return if failed {
                Err("enrollment refused".into())
            } else {
                Ok(None)
            };
        }
        Ok(Some(_)) => Err(refuse(
            ErrorCode::NotAuthenticated,
            "the first stream of a connection must carry a Hello frame".into(),
        )),
        Ok(None) => Err(refuse(ErrorCode::NotAuthenticated, "no Hello frame".into())),
        Err(e) => Err(refuse(ErrorCode::Malformed, e.to_string())),
    };
    let reply = match &result {
        Ok(p) => Frame::Welcome {
            tenant: p.tenant.clone(),
            role: p.role,
        },
        Err((code, message)) => Frame::Error {
            code: *code,
            message: message.clone(),
        },
    };
    let _ = write_frame(&mut send, &reply).await;
    let _ = send.finish();
    result.map(Some).map_err(|(_, m)| m)
}
