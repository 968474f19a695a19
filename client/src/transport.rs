//! How a connection reaches the server: QUIC over UDP, or — where a network drops UDP — the
//! same QUIC carried over TLS over TCP (`quire_net::tunnel`), to the same port number.
//!
//! `Auto` (the default) tries QUIC first and, if no handshake has completed after
//! [`QUIC_HEAD_START`] and the server has not answered over UDP at all, tries TCP beside it;
//! whichever completes first is used. A server that answered over UDP is only slow (a lossy
//! link losing handshake packets), not out of reach: QUIC's handshake is waited for, since
//! TCP's loss recovery fares far worse on such links. A server reached over TCP while its
//! QUIC attempt then failed outright is remembered for [`REMEMBER_TCP`]: connections to it
//! go straight to TCP meanwhile, then QUIC is tried again. If the QUIC attempt completes after
//! all, nothing is remembered: the next connection tries QUIC again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use quire_net::tunnel::TunnelSocket;

use crate::{client_endpoint, is_tls_failure, ClientError, Login};

/// The way to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// QUIC, falling back to TCP when no QUIC handshake completes in time.
    #[default]
    Auto,
    Quic,
    Tcp,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Transport::Auto),
            "quic" => Ok(Transport::Quic),
            "tcp" => Ok(Transport::Tcp),
            other => Err(format!("{other:?}: the transport is quic, tcp or auto")),
        }
    }
}

/// How long QUIC is tried alone before TCP is tried beside it.
pub const QUIC_HEAD_START: Duration = Duration::from_millis(500);
/// How long a server reached over TCP by `Auto` is reached over TCP directly.
pub const REMEMBER_TCP: Duration = Duration::from_secs(600);
/// A TCP connection and its TLS handshake must complete within this.
const TCP_DEADLINE: Duration = Duration::from_secs(10);

static DEFAULT: OnceLock<Transport> = OnceLock::new();

/// Sets the transport of every connection this process makes (the command line's
/// `--transport`); once, before the first connection. Otherwise `QUIRE_TRANSPORT`, else `Auto`.
pub fn set_default(t: Transport) {
    let _ = DEFAULT.set(t);
}

fn default_transport() -> Transport {
    *DEFAULT.get_or_init(|| {
        std::env::var("QUIRE_TRANSPORT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    })
}

fn tcp_servers() -> &'static Mutex<HashMap<SocketAddr, Instant>> {
    static SEEN: OnceLock<Mutex<HashMap<SocketAddr, Instant>>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

fn recently_tcp(addr: SocketAddr) -> bool {
    tcp_servers()
        .lock()
        .expect("transport memory lock")
        .get(&addr)
        .is_some_and(|t| t.elapsed() < REMEMBER_TCP)
}

/// Opens a QUIC connection to `l.addr` the way the transport says.
/// Returns the endpoint, the connection and which way it went (`Quic` or `Tcp`).
pub(crate) async fn establish(
    l: &Login<'_>,
    config: quinn::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection, Transport), ClientError> {
    let outer = quire_net::tls::tcp_client_config(l.ca_pem)?;
    establish_to(l.addr, l.server_name, config, outer).await
}

/// [`establish`] to `addr` (certificate checked for `server_name`), `outer` being the TLS
/// configuration of a tunnel over TCP.
pub(crate) async fn establish_to(
    addr: SocketAddr,
    server_name: &str,
    config: quinn::ClientConfig,
    outer: rustls::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection, Transport), ClientError> {
    let l = &Peer { addr, server_name };
    let tcp = |(e, c)| (e, c, Transport::Tcp);
    let quic = |(e, c)| (e, c, Transport::Quic);
    match default_transport() {
        Transport::Quic => over_udp(l, config, None).await.map(quic),
        Transport::Tcp => over_tcp(l, config, outer).await.map(tcp),
        Transport::Auto if recently_tcp(l.addr) => over_tcp(l, config, outer).await.map(tcp),
        Transport::Auto => race(addr, server_name, config, outer).await,
    }
}

/// QUIC, and TCP beside it once QUIC had [`QUIC_HEAD_START`] without a word from the server.
async fn race(
    addr: SocketAddr,
    server_name: &str,
    config: quinn::ClientConfig,
    outer: rustls::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection, Transport), ClientError> {
    let (heard_tx, heard) = tokio::sync::watch::channel(false);
    // Its own task: it goes on after TCP wins, to learn whether QUIC works at all.
    let mut by_udp = tokio::spawn({
        let (name, config) = (server_name.to_string(), config.clone());
        async move {
            let l = Peer {
                addr,
                server_name: &name,
            };
            over_udp(&l, config, Some(heard_tx)).await
        }
    });
    let l = &Peer { addr, server_name };
    let by_tcp = async {
        tokio::time::sleep(QUIC_HEAD_START).await;
        if *heard.borrow() {
            return Err(ClientError::Connect {
                addr: format!("{addr} (TCP)"),
                message: "not tried: the server answered over QUIC".into(),
            });
        }
        over_tcp(l, config, outer).await
    };
    tokio::pin!(by_tcp);
    let (mut quic_err, mut tcp_err) = (None, None);
    loop {
        tokio::select! {
            r = &mut by_udp, if quic_err.is_none() => match r.map_err(|e| ClientError::Connect {
                addr: addr.to_string(),
                message: format!("QUIC attempt: {e}"),
            })? {
                Ok((e, c)) => return Ok((e, c, Transport::Quic)),
                Err(e) => quic_err = Some(e),
            },
            r = &mut by_tcp, if tcp_err.is_none() => match r {
                Ok((e, c)) => {
                    if quic_err.is_some() {
                        remember_tcp(addr);
                    } else {
                        tokio::spawn(settle_quic_attempt(addr, by_udp));
                    }
                    return Ok((e, c, Transport::Tcp));
                }
                Err(e) => tcp_err = Some(e),
            },
        }
        if let (Some(q), Some(t)) = (&quic_err, &tcp_err) {
            return Err(ClientError::Connect {
                addr: addr.to_string(),
                message: format!("over QUIC: {}; over TCP: {}", describe(q), describe(t)),
            });
        }
    }
}

/// After TCP won: TCP is remembered only if QUIC then fails too (UDP blocked), not if it was
/// merely slower (a lost handshake packet); its connection, if it came, is closed unused.
async fn settle_quic_attempt(
    addr: SocketAddr,
    attempt: tokio::task::JoinHandle<Result<(quinn::Endpoint, quinn::Connection), ClientError>>,
) {
    match attempt.await {
        Ok(Ok((endpoint, conn))) => {
            conn.close(0u32.into(), b"reached over TCP first");
            endpoint.wait_idle().await;
        }
        _ => remember_tcp(addr),
    }
}

fn remember_tcp(addr: SocketAddr) {
    tcp_servers()
        .lock()
        .expect("transport memory lock")
        .insert(addr, Instant::now());
}

fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Connect { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Where a connection goes.
struct Peer<'a> {
    addr: SocketAddr,
    server_name: &'a str,
}

/// QUIC over UDP; `heard` is set once the server first answers (its first flight, or a refusal:
/// UDP gets through both ways).
async fn over_udp(
    l: &Peer<'_>,
    config: quinn::ClientConfig,
    heard: Option<tokio::sync::watch::Sender<bool>>,
) -> Result<(quinn::Endpoint, quinn::Connection), ClientError> {
    let endpoint = client_endpoint(l.addr, config)?;
    let conn = handshake(l, &endpoint, heard.as_ref()).await?;
    Ok((endpoint, conn))
}

/// QUIC through a TLS connection to the server's TCP port.
async fn over_tcp(
    l: &Peer<'_>,
    config: quinn::ClientConfig,
    tls: rustls::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection), ClientError> {
    let connect_err = |message: String| ClientError::Connect {
        addr: format!("{} (TCP)", l.addr),
        message,
    };
    let name = rustls::pki_types::ServerName::try_from(l.server_name.to_string())
        .map_err(|e| connect_err(format!("{:?} is not a server name: {e}", l.server_name)))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let opening = async {
        let tcp = tokio::net::TcpStream::connect(l.addr).await?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr()?;
        let stream = connector.connect(name, tcp).await?;
        Ok::<_, std::io::Error>((stream, local))
    };
    let (stream, local) = tokio::time::timeout(TCP_DEADLINE, opening)
        .await
        .map_err(|_| {
            connect_err(format!(
                "no TCP connection within {} s",
                TCP_DEADLINE.as_secs()
            ))
        })?
        .map_err(|e| {
            let cert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .filter(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            connect_err(match cert {
                Some(r) => untrusted(&r.to_string(), l.server_name),
                None => e.to_string(),
            })
        })?;
    let socket = TunnelSocket::client(stream, local, l.addr);
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quire_net::cid::endpoint_config(),
        None,
        socket,
        std::sync::Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| connect_err(e.to_string()))?;
    endpoint.set_default_client_config(config);
    let conn = handshake(l, &endpoint, None).await?;
    Ok((endpoint, conn))
}

/// The QUIC handshake with the server, retried while the server refuses new connections.
async fn handshake(
    l: &Peer<'_>,
    endpoint: &quinn::Endpoint,
    heard: Option<&tokio::sync::watch::Sender<bool>>,
) -> Result<quinn::Connection, ClientError> {
    let connect_err = |message: String| ClientError::Connect {
        addr: l.addr.to_string(),
        message,
    };
    // A busy server refuses new connections outright (CONNECTION_REFUSED): back off and
    // try again a few times before giving up. Jittered, so that a fleet reconnecting at
    // once (after a server restart) spreads out instead of coming back in waves.
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(4))
        .with_jitter()
        .with_max_times(10)
        .build();
    loop {
        let mut connecting = endpoint
            .connect(l.addr, l.server_name)
            .map_err(|e| connect_err(e.to_string()))?;
        let attempt = async {
            // The server's first flight (its handshake parameters) has arrived.
            if connecting.handshake_data().await.is_ok() {
                if let Some(h) = heard {
                    h.send_replace(true);
                }
            }
            connecting.await
        };
        match tokio::time::timeout(Duration::from_secs(15), attempt).await {
            Err(_) => {
                return Err(connect_err(
                    "no answer within 15 s (is `quire serve` running?)".into(),
                ))
            }
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(quinn::ConnectionError::ConnectionClosed(c)))
                if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                // A refusal is an answer over UDP: the server is busy (or has too many
                // handshakes from this address, as for scanners behind one NAT connecting at
                // once), not out of reach, so TCP would not help: wait for a turn over QUIC.
                if let Some(h) = heard {
                    h.send_replace(true);
                }
                match delays.next() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        let e = quinn::ConnectionError::ConnectionClosed(c);
                        return Err(connect_err(e.to_string()));
                    }
                }
            }
            Ok(Err(quinn::ConnectionError::TransportError(t))) if is_tls_failure(&t) => {
                return Err(connect_err(untrusted(&t.reason, l.server_name)))
            }
            Ok(Err(e)) => return Err(connect_err(e.to_string())),
        }
    }
}

/// What a certificate the credential does not trust means, and what to do.
fn untrusted(reason: &str, server_name: &str) -> String {
    format!(
        "the server's certificate is not one this credential trusts ({reason}): it must be \
         issued for {server_name} by the CA in the credential (or be the certificate pinned \
         there); if the server's certificate was replaced by one from another CA, enroll again"
    )
}
