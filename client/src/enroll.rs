//! `quire enroll`: a new scanner trades a one-time token for its own credential.
//!
//! The token, issued by `quire admin token create`, reads `qt1.<secret>.<certificate
//! fingerprint>`: the secret proves the administrator let this scanner in, and the
//! fingerprint (SHA-256 of the server's certificate) lets the scanner trust the server before
//! it has the certificate. The device starts pending: it can send nothing until an
//! administrator enables it.

use std::net::SocketAddr;

use quire_codecs::wire::{Frame, Role};
use zeroize::Zeroizing;

use super::{expect_answer, ClientError};
use quire_net::credential::Credential;
use quire_net::stream::{write_frame, FrameReader};

const PREFIX: &str = "qt1";

/// A parsed enrollment token.
pub struct EnrollToken {
    pub secret: Zeroizing<[u8; 32]>,
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollToken(<redacted>)")
    }
}

impl EnrollToken {
    /// The printable form.
    pub fn format(secret: &[u8; 32], fingerprint: &[u8; 32]) -> String {
        format!(
            "{PREFIX}.{}.{}",
            hex::encode(secret),
            hex::encode(fingerprint)
        )
    }

    pub fn parse(s: &str) -> Result<EnrollToken, ClientError> {
        let bad = || ClientError::Local {
            path: "--token".into(),
            message: "not an enrollment token (expected qt1.<64 hex>.<64 hex>)".into(),
        };
        let mut parts = s.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(bad());
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        let mut fingerprint = [0u8; 32];
        hex::decode_to_slice(parts.next().ok_or_else(bad)?, &mut secret[..]).map_err(|_| bad())?;
        hex::decode_to_slice(parts.next().ok_or_else(bad)?, &mut fingerprint).map_err(|_| bad())?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(EnrollToken {
            secret,
            fingerprint,
        })
    }
}

/// Enrolls `device_id` at `server` (`host:port`) and returns its credential, ready to save.
/// The certificate is checked against `server_name`, by default the host (or `localhost` for
/// an IP address). The credential keeps the certificate the token pins: the server's own, or
/// the CA that issued it, so that renewals from that CA need no new credentials.
pub async fn enroll(
    server: &str,
    server_name: Option<&str>,
    token: &EnrollToken,
    device_id: &str,
) -> Result<Credential, ClientError> {
    let address = crate::address::parse(server)?;
    let name = server_name.unwrap_or_else(|| address.tls_name("localhost"));
    let addrs = crate::address::resolve(&address).await?;
    let (tenant, device_id, role, secret, pinned) =
        crate::address::first_to_connect(&addrs, |addr| enroll_at(addr, name, token, device_id))
            .await?;
    Ok(Credential {
        server: server.into(),
        server_name: name.into(),
        tenant,
        device_id,
        role: role.as_str().into(),
        secret: hex::encode(secret),
        server_ca: quire_net::tls::der_to_pem(&pinned),
    })
}

/// What an enrollment brings back: tenant, device id, role, secret, and the pinned
/// certificate (DER).
type Enrolled = (String, String, Role, [u8; 32], Vec<u8>);

async fn enroll_at(
    addr: SocketAddr,
    server_name: &str,
    token: &EnrollToken,
    device_id: &str,
) -> Result<Enrolled, ClientError> {
    let config = quire_net::tls::pinned_client_config(token.fingerprint)?;
    let connect_err = |message: String| ClientError::Connect {
        addr: addr.to_string(),
        message,
    };
    let outer = quire_net::tls::pinned_tcp_client_config(token.fingerprint)?;
    let (endpoint, conn, _) =
        crate::transport::establish_to(addr, server_name, config, outer).await?;
    let chain = crate::peer_chain(&conn);
    let pinned = quire_net::tls::find_pinned(&chain, &token.fingerprint)
        .map(|c| c.to_vec())
        .ok_or_else(|| {
            ClientError::Protocol(
                "the server did not present the certificate the token pins".into(),
            )
        })?;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    write_frame(
        &mut send,
        &Frame::Enroll {
            token: *token.secret,
            device_id: device_id.into(),
        },
    )
    .await?;
    let _ = send.finish();
    let answer = expect_answer(&mut FrameReader::new(recv)).await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    match answer? {
        Frame::AdminIssued {
            device_id,
            tenant,
            role,
            secret,
        } => Ok((tenant, device_id, role, secret, pinned)),
        other => Err(ClientError::Protocol(format!(
            "expected a credential, got {other:?}"
        ))),
    }
}
