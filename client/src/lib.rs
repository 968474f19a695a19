//! The Quire client: what a scanner (`push`, `get`), a delivery consumer (`deliver`), a new
//! device (`enroll`) and an administrator (`admin`) run, as a library a scanner vendor can
//! embed. It speaks `quire/1` over QUIC and needs none of the server's storage stack.
//!
//! A scanner holds a credential file (from `quire enroll`, or written by an administrator);
//! [`Connection::connect`] opens an authenticated connection with it; [`push::push_dir`]
//! pushes a directory as one job (resuming an interrupted push, never storing a committed
//! directory twice); [`push::push_pages`] pushes pages the caller holds (names and readers);
//! [`get::get_job`] fetches a job back and verifies every page against its
//! manifest. Errors are [`ClientError`]s that say whose fault a failure is
//! ([`ClientError::code`] gives the server's reason, [`quire_codecs::wire::ErrorCode::is_retryable`]
//! whether to try again).
//!
//! ```
//! use quire_client::credential::{Credential, CredentialFile};
//! use quire_client::{get, push, Connection};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # // An in-process server on an ephemeral port, with its development tenant and device.
//! # let config = quire_server::config::ServerConfig::load(
//! #     None,
//! #     Some("127.0.0.1:0".parse()?),
//! #     Some(tmp.path().join("data")),
//! # )?;
//! # let server = std::sync::Arc::new(quire_server::Server::start(config).await?);
//! # let running = { let s = server.clone(); tokio::spawn(async move { s.run().await }) };
//! # let credential_file = tmp.path().join("data").join(quire_client::credential::DEV_DEVICE_CRED);
//! # let pages = tmp.path().join("scan-job");
//! # std::fs::create_dir(&pages)?;
//! # std::fs::write(pages.join("page-1.jpg"), b"\xff\xd8 a scanned page")?;
//! # std::fs::write(pages.join("page-2.jpg"), b"\xff\xd8 another page")?;
//! # let state_dir = tmp.path().join("state");
//! # let out = tmp.path().join("fetched");
//! let credential = Credential::load(&credential_file)?;
//! let conn = Connection::connect(&credential, Some(server.local_addr())).await?;
//!
//! let options = push::PushOptions {
//!     job: None,
//!     concurrency: 8,
//!     progress: None,
//!     state_dir,
//!     again: false,
//!     follow_symlinks: false,
//! };
//! let report = push::push_dir(&conn, &pages, &options).await?;
//! assert_eq!(report.pages, 2);
//!
//! let fetched = get::get_job(&conn, &report.job_id, None, &out).await?;
//! assert_eq!(std::fs::read(&fetched[1].path)?, std::fs::read(pages.join("page-2.jpg"))?);
//! conn.close().await;
//! # server.shutdown().await;
//! # running.await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod address;
pub mod admin;
pub mod agent;
pub mod deliver;
pub mod enroll;
pub mod get;
pub mod journal;
pub mod push;
pub mod transport;
pub mod verify;

/// Credential files, stream framing and TLS, shared with the server (`quire-net`).
pub use quire_net::{credential, stream, tls};

use std::net::SocketAddr;
use std::time::Duration;

use quire_codecs::wire::{ErrorCode, Frame, Role, ALPN};

use quire_net::credential::{Credential, CredentialError};
use quire_net::stream::{write_frame, FrameReader, StreamError};

/// A client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Tls(#[from] quire_net::tls::TlsError),
    #[error("cannot reach the server at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("the server refused: {message} ({code:?})")]
    Refused { code: ErrorCode, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{path}: {message}")]
    Local { path: String, message: String },
    #[error(transparent)]
    Stream(StreamError),
    #[error("the signed manifest does not verify: {0}")]
    Signature(#[from] quire_codecs::signed::SignedError),
}

/// A connection the server closed because an administrator disabled or revoked the device
/// is a refusal with a reason, not a network failure.
fn closed_by_admin(e: &quinn::ConnectionError) -> Option<ClientError> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quire_codecs::wire::CLOSE_DEVICE_DISABLED.into() =>
        {
            Some(ClientError::Refused {
                code: ErrorCode::DeviceDisabled,
                message: String::from_utf8_lossy(&c.reason).into_owned(),
            })
        }
        _ => None,
    }
}

impl From<StreamError> for ClientError {
    fn from(e: StreamError) -> Self {
        let lost = match &e {
            StreamError::Read(quinn::ReadError::ConnectionLost(c)) => Some(c),
            StreamError::Write(quinn::WriteError::ConnectionLost(c)) => Some(c),
            _ => None,
        };
        lost.and_then(closed_by_admin)
            .unwrap_or(ClientError::Stream(e))
    }
}

impl ClientError {
    /// Whether the failure concerns one job only (the server refused it, or its data failed
    /// verification), so that work on other jobs may go on; connection and local failures
    /// concern everything.
    pub fn is_about_one_job(&self) -> bool {
        matches!(
            self,
            ClientError::Refused { .. } | ClientError::Protocol(_) | ClientError::Signature(_)
        )
    }

    /// Whether the connection was lost or could not be used (the server or the network went
    /// away), so that the work may go on over a new connection, to the same server or to
    /// another node of it; refusals, protocol errors and local failures are not.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Stream(StreamError::Read(quinn::ReadError::ConnectionLost(_)))
                | ClientError::Stream(StreamError::Write(quinn::WriteError::ConnectionLost(_)))
        )
    }

    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// An authenticated connection to a Quire server.
#[derive(Debug)]
pub struct Connection {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    /// `Quic` or `Tcp`: which way this connection went.
    pub transport: transport::Transport,
    pub tenant: String,
    pub device_id: String,
    pub role: Role,
    /// The server refused a page whose digest comes after its bytes (it is older than
    /// `PagePutDigestAfter`): hash pages before sending them.
    pub(crate) digest_after_refused: std::sync::atomic::AtomicBool,
    /// Pages this connection may send at once, cut when the server says "later".
    pub(crate) pages: push::gate::PageGate,
    /// Buffers of page pieces the server has acknowledged, for the next pieces.
    pub(crate) buffers: std::sync::Arc<push::buffers::Buffers>,
}

/// What identifies a client to the server.
#[derive(Debug, Clone)]
pub struct Login<'a> {
    pub addr: SocketAddr,
    pub server_name: &'a str,
    pub ca_pem: &'a str,
    pub alpn: &'a [u8],
    pub tenant: &'a str,
    pub device_id: &'a str,
    pub secret: [u8; 32],
}

/// A client endpoint on an ephemeral port of `addr`'s family, using `config` for its
/// connections.
pub(crate) fn client_endpoint(
    addr: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Endpoint, ClientError> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("valid");
    // A large receive buffer for downloads (`get`); pushing receives little.
    let (mut endpoint, _) =
        quire_net::udp::endpoint(bind, None).map_err(|e| ClientError::Connect {
            addr: addr.to_string(),
            message: e.to_string(),
        })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The certificate chain the peer presented in the handshake (empty if none).
pub(crate) fn peer_chain(
    conn: &quinn::Connection,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .map(|chain| *chain)
        .unwrap_or_default()
}

/// A handshake that failed in TLS (QUIC's crypto error codes carry the TLS alert).
fn is_tls_failure(t: &quinn_proto::TransportError) -> bool {
    (0x100..0x200).contains(&u64::from(t.code))
}

/// What a connection closed while saying `Hello` means: a refused credential, or (the
/// server's hello deadline passed) a slow link or client, which a new attempt may get past.
fn refusal_at_hello(e: &quinn::ConnectionError, addr: SocketAddr) -> ClientError {
    match e {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quire_codecs::wire::CLOSE_TOO_SLOW.into() =>
        {
            ClientError::Connect {
                addr: addr.to_string(),
                message: String::from_utf8_lossy(&c.reason).into_owned(),
            }
        }
        quinn::ConnectionError::ApplicationClosed(c) => ClientError::Refused {
            code: ErrorCode::BadCredential,
            message: String::from_utf8_lossy(&c.reason).into_owned(),
        },
        other => ClientError::Connect {
            addr: addr.to_string(),
            message: other.to_string(),
        },
    }
}

impl Connection {
    /// Connects with a credential file's contents; `server` overrides the address in it.
    pub async fn connect(
        cred: &Credential,
        server: Option<SocketAddr>,
    ) -> Result<Connection, ClientError> {
        match server {
            Some(addr) => Self::connect_at(cred, addr, &cred.server_name).await,
            None => Self::connect_to(cred, &cred.server).await,
        }
    }

    /// Connects to `server` (`host:port`, as `--server` takes it, or several nodes separated
    /// by commas) with a credential: names are resolved, every address tried from a node
    /// chosen at random (see [`address::resolve_all`], [`address::first_to_connect`]), and the
    /// server's certificate checked against the name (against the credential's `server_name`
    /// for an IP address).
    pub async fn connect_to(cred: &Credential, server: &str) -> Result<Connection, ClientError> {
        let targets = address::resolve_all(server, &cred.server_name).await?;
        address::first_to_connect(&targets, |(addr, name): address::Target| async move {
            Self::connect_at(cred, addr, &name).await
        })
        .await
    }

    async fn connect_at(
        cred: &Credential,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, ClientError> {
        let secret = cred
            .secret_bytes()
            .ok_or_else(|| ClientError::Protocol("bad secret".into()))?;
        Self::login(Login {
            addr,
            server_name,
            ca_pem: &cred.server_ca,
            alpn: ALPN,
            tenant: &cred.tenant,
            device_id: &cred.device_id,
            secret: *secret,
        })
        .await
    }

    /// Connects and authenticates with explicit parameters (tests use this to misbehave).
    pub async fn login(l: Login<'_>) -> Result<Connection, ClientError> {
        let mut config = quire_net::tls::client_config(l.ca_pem, l.alpn)?;
        config.transport_config(std::sync::Arc::new(transport_config()));
        let (endpoint, conn, way) = transport::establish(&l, config).await?;

        let refused_by_close = |e: &quinn::ConnectionError| refusal_at_hello(e, l.addr);
        let (mut send, recv) = conn.open_bi().await.map_err(|e| refused_by_close(&e))?;
        write_frame(
            &mut send,
            &Frame::Hello {
                tenant: l.tenant.into(),
                device_id: l.device_id.into(),
                secret: l.secret,
            },
        )
        .await?;
        let _ = send.finish();
        let mut reader = FrameReader::new(recv);
        let answer = match reader.next().await {
            Ok(f) => f,
            Err(StreamError::Read(quinn::ReadError::ConnectionLost(e))) => {
                return Err(refused_by_close(&e))
            }
            Err(e) => return Err(e.into()),
        };
        match answer {
            Some(Frame::Welcome { tenant, role }) => Ok(Connection {
                endpoint,
                conn,
                transport: way,
                tenant,
                device_id: l.device_id.into(),
                role,
                digest_after_refused: Default::default(),
                pages: Default::default(),
                buffers: Default::default(),
            }),
            Some(Frame::Error { code, message }) => Err(ClientError::Refused { code, message }),
            other => Err(ClientError::Protocol(format!(
                "expected Welcome, got {other:?}"
            ))),
        }
    }

    /// Opens a request stream and sends its first frame.
    pub async fn open(
        &self,
        request: &Frame,
    ) -> Result<(quinn::SendStream, FrameReader), ClientError> {
        let (mut send, recv) = self.conn.open_bi().await.map_err(|e| {
            closed_by_admin(&e).unwrap_or_else(|| ClientError::Connect {
                addr: self.conn.remote_address().to_string(),
                message: e.to_string(),
            })
        })?;
        write_frame(&mut send, request).await?;
        Ok((send, FrameReader::new(recv)))
    }

    /// Opens a request stream and sends `raw` bytes as they are (tests use this to send
    /// frames no well-behaved client would build).
    pub async fn open_raw(
        &self,
        raw: bytes::Bytes,
    ) -> Result<(quinn::SendStream, FrameReader), ClientError> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Connect {
                addr: self.conn.remote_address().to_string(),
                message: e.to_string(),
            })?;
        send.write_chunk(raw).await.map_err(StreamError::from)?;
        Ok((send, FrameReader::new(recv)))
    }

    /// Sends a one-frame request and returns the one-frame answer; an `Error` answer
    /// becomes [`ClientError::Refused`].
    pub async fn call(&self, request: &Frame) -> Result<Frame, ClientError> {
        let (mut send, mut reader) = self.open(request).await?;
        let _ = send.finish();
        expect_answer(&mut reader).await
    }

    /// The certificate chain the server presented (DER, its own certificate first): which
    /// certificate a server is serving, e.g. after a renewal.
    pub fn server_certificates(&self) -> Vec<Vec<u8>> {
        peer_chain(&self.conn).iter().map(|c| c.to_vec()).collect()
    }

    /// The connection's congestion controller as it stands (for diagnostics: its window,
    /// and which controller it is, through `Controller::into_any`).
    pub fn congestion_controller(&self) -> Box<dyn quinn::congestion::Controller> {
        self.conn.congestion_state()
    }

    /// The connection's transport statistics (round trip, congestion window, losses, frames
    /// sent and received), for diagnostics.
    pub fn transport_stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    /// Whether the connection has ended (lost, closed by the server, or timed out).
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Closes the connection politely and waits for the close to be sent.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}

/// The scanner's QUIC transport settings (the transport bench uses them too).
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // The congestion controller of what a scanner sends: Quire's own (`quire_net::congestion`).
    // Across an emulated branch-office link (40 ms, 100 Mbit/s, 4 scanners) it kept 11.0, 11.1
    // and 10.7 MB/s at 0, 0.5 and 2 % random loss with under 0.4 % of its packets dropped at
    // the bottleneck; quinn's Cubic fell to 1.3 and 0.67 MB/s under loss, and quinn's BBR, as
    // fast, had the bottleneck drop more packets than it delivered (`loadtest/wan.sh`,
    // docs/PERFORMANCE.md). `QUIRE_CONGESTION` = bbr, cubic or newreno picks quinn's instead.
    transport.congestion_controller_factory(quire_net::congestion::factory());
    transport.stream_receive_window((8u32 * 1024 * 1024).into());
    transport.receive_window((32u32 * 1024 * 1024).into());
    transport.send_window(16 * 1024 * 1024);
    transport.initial_rtt(quire_net::INITIAL_RTT);
    // A scanner should notice a dead server within seconds, not minutes.
    transport.keep_alive_interval(Some(Duration::from_secs(2)));
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into().expect("10 s fits")));
    transport
}

/// A local file problem, naming the path.
pub(crate) fn local_err(path: &std::path::Path, message: impl std::fmt::Display) -> ClientError {
    ClientError::Local {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads one answer frame, turning `Error` into [`ClientError::Refused`].
pub async fn expect_answer(reader: &mut FrameReader) -> Result<Frame, ClientError> {
    match reader.next().await? {
        Some(Frame::Error { code, message }) => Err(ClientError::Refused { code, message }),
        Some(f) => Ok(f),
        None => Err(ClientError::Protocol(
            "the server closed the stream without an answer".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u32, reason: &str) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: code.into(),
            reason: reason.as_bytes().to_vec().into(),
        })
    }

    /// A server's hello deadline is a slow link's problem, not the credential's: it must come
    /// back as a connection failure (retried; exit code 3), while a refused credential stays
    /// a refusal (exit code 4: fix the credential).
    #[test]
    fn a_hello_deadline_is_not_a_bad_credential() {
        let addr: SocketAddr = "192.0.2.1:4433".parse().unwrap();
        let slow = refusal_at_hello(
            &closed(quire_codecs::wire::CLOSE_TOO_SLOW, "no hello"),
            addr,
        );
        assert!(matches!(slow, ClientError::Connect { .. }), "{slow:?}");
        let bad = refusal_at_hello(
            &closed(quire_codecs::wire::CLOSE_AUTH_FAILED, "bad secret"),
            addr,
        );
        assert!(
            matches!(bad, ClientError::Refused { code: ErrorCode::BadCredential, ref message } if message == "bad secret"),
            "{bad:?}"
        );
        let lost = refusal_at_hello(&quinn::ConnectionError::TimedOut, addr);
        assert!(matches!(lost, ClientError::Connect { .. }), "{lost:?}");
    }
}
