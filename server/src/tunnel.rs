//! The TCP port: TLS connections carrying QUIC for scanners whose network drops UDP
//! (`quire_net::tunnel`). Every tunnel feeds a second QUIC endpoint with the same server
//! configuration, whose connections the edge serves exactly like those over UDP — the same
//! handshake gate, authentication, limits, metrics and audit.
//!
//! Before a tunnel carries anything it must finish its TLS handshake within
//! [`TLS_DEADLINE`]; at most [`MAX_TUNNELS`] are open, [`MAX_TUNNELS_PER_SOURCE`] from one
//! address, so idle or hostile sockets cost a bounded share.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quire_net::tunnel::TunnelSocket;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::config::TcpListen;

/// A tunnel's TLS handshake must end within this.
pub const TLS_DEADLINE: Duration = Duration::from_secs(10);
/// Tunnels open at once.
pub const MAX_TUNNELS: usize = 10_000;
/// Tunnels open at once from one address.
pub const MAX_TUNNELS_PER_SOURCE: usize = 64;

/// The TCP port and the QUIC endpoint behind it.
pub(crate) struct Tunnels {
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
}

/// Binds the QUIC endpoint at `listen` and the TCP port `tcp` says, and starts accepting
/// tunnels. With port 0 (the system picks) and TCP on the same port, a port free for both is
/// found: one taken on TCP is given back and another tried. A QUIC socket whose receive
/// buffer the kernel caps short of [`quire_net::udp::RECEIVE_BUFFER`] is logged with advice.
pub(crate) async fn bind_both(
    listen: SocketAddr,
    tcp: TcpListen,
    server_config: quinn::ServerConfig,
    tls: rustls::ServerConfig,
) -> std::io::Result<(
    quinn::Endpoint,
    quire_net::udp::ReceiveBuffer,
    Option<Tunnels>,
)> {
    let mut attempts = 0;
    loop {
        let (endpoint, buffer) = quire_net::udp::endpoint(listen, Some(server_config.clone()))?;
        if buffer.is_short() && attempts == 0 {
            warn!("{}", buffer.advice());
        }
        let quic = endpoint.local_addr()?;
        match bind(tcp, quic, server_config.clone(), tls.clone()).await {
            Ok(tunnels) => return Ok((endpoint, buffer, tunnels)),
            Err(e) if listen.port() == 0 && tcp == TcpListen::SamePort && attempts < 20 => {
                debug!(port = quic.port(), error = %e, "port taken on TCP; trying another");
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Binds the TCP port `where_` says (`quic` is the QUIC endpoint's own address), and starts
/// accepting tunnels. `None` when TCP is off.
async fn bind(
    where_: TcpListen,
    quic: SocketAddr,
    server_config: quinn::ServerConfig,
    tls: rustls::ServerConfig,
) -> std::io::Result<Option<Tunnels>> {
    let at = match where_ {
        TcpListen::Off => return Ok(None),
        TcpListen::At(addr) => addr,
        TcpListen::SamePort => quic,
    };
    let listener = TcpListener::bind(at).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("the TCP port {at} (for networks that drop UDP): {e}; set [tcp] listen to another address, or \"off\""),
        )
    })?;
    let addr = listener.local_addr()?;
    let socket = TunnelSocket::server(addr);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quire_net::cid::endpoint_config(),
        Some(server_config),
        socket.clone(),
        Arc::new(quinn::TokioRuntime),
    )?;
    tokio::spawn(accept(listener, socket, tls));
    Ok(Some(Tunnels { endpoint, addr }))
}

/// Counts tunnels per source address; a slot is given back when dropped.
#[derive(Default, Clone)]
struct Sources(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct Slot(Sources, IpAddr);

impl Sources {
    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let mut m = self.0.lock().expect("sources lock");
        let total: usize = m.values().sum();
        let n = m.entry(ip).or_default();
        if *n >= MAX_TUNNELS_PER_SOURCE || total >= MAX_TUNNELS {
            return None;
        }
        *n += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().expect("sources lock");
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

async fn accept(listener: TcpListener, socket: Arc<TunnelSocket>, tls: rustls::ServerConfig) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let sources = Sources::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                warn!(error = %e, "cannot accept a TCP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = sources.take(peer.ip()) else {
            debug!(%peer, "too many tunnels; TCP connection refused");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, socket) = (acceptor.clone(), socket.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_DEADLINE, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => socket.serve(peer, stream).await,
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake on the TCP port failed"),
                Err(_) => debug!(%peer, "no TLS handshake on the TCP port in time"),
            }
            drop(slot);
        });
    }
}
