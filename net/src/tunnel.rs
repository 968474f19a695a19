//! QUIC carried over TLS over TCP, for networks that drop UDP.
//!
//! Many corporate networks let nothing but TCP out. There a scanner opens one TLS connection
//! (TLS 1.3 or 1.2, ALPN `quire-tcp/1`) to the server's TCP port and both ends send their QUIC
//! datagrams through it, each prefixed with its length (2 bytes, big-endian). Everything above
//! the datagrams is unchanged: the same QUIC connection with its streams, the same frames,
//! authentication, limits, metrics and audit — only the path differs. The sockets below are
//! quinn's [`AsyncUdpSocket`] over such connections: the server's [`TunnelSocket`] gathers
//! the datagrams of every tunnel into one socket for its second endpoint (each tunnel's TCP
//! peer address standing for the datagrams' source); a scanner's carries its one tunnel.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The ALPN of the outer TLS connection.
pub const ALPN_TCP: &[u8] = b"quire-tcp/1";

/// Datagrams waiting to be taken by the endpoint, across all tunnels.
const INBOX: usize = 4096;

/// The largest datagram a tunnel carries: QUIC's packets are at most 1452 bytes here (quinn's
/// default MTU ceiling), so a longer length is a broken or hostile peer, and the tunnel ends.
/// It also bounds what the inbox can hold (about 8 MB).
pub const MAX_DATAGRAM: usize = 2048;

/// Writes never wait at this layer: QUIC's congestion control bounds what is outstanding.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Copies a received datagram into quinn's first buffer.
fn deliver(
    addr: SocketAddr,
    datagram: &[u8],
    bufs: &mut [IoSliceMut<'_>],
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let n = datagram.len().min(bufs[0].len());
    bufs[0][..n].copy_from_slice(&datagram[..n]);
    meta[0] = RecvMeta {
        addr,
        len: n,
        stride: n,
        ecn: None,
        dst_ip: None,
    };
    Ok(1)
}

/// Reads length-prefixed datagrams from `reader` and hands each to `put` until the stream
/// ends, fails, or `put` says stop.
async fn read_datagrams<R: AsyncRead + Unpin>(
    mut reader: R,
    mut put: impl FnMut(Bytes) -> bool,
) -> io::Result<()> {
    loop {
        let len = match reader.read_u16().await {
            Ok(n) => usize::from(n),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if len > MAX_DATAGRAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {len}-byte datagram; at most {MAX_DATAGRAM} are carried"),
            ));
        }
        let mut buf = BytesMut::zeroed(len);
        reader.read_exact(&mut buf).await?;
        if !put(buf.freeze()) {
            return Ok(());
        }
    }
}

/// Puts each datagram of a tunnel from `peer` into `inbox`; a full inbox drops it, as a full
/// socket buffer would. Stops when the inbox is gone.
fn into_inbox(
    inbox: &mpsc::Sender<(SocketAddr, Bytes)>,
    peer: SocketAddr,
) -> impl FnMut(Bytes) -> bool + '_ {
    move |d| {
        !matches!(
            inbox.try_send((peer, d)),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }
}

/// Writes the datagrams of `rx` to `writer`, length-prefixed, flushing when none waits.
async fn write_datagrams<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> io::Result<()> {
    while let Some(d) = rx.recv().await {
        let mut next = Some(d);
        while let Some(d) = next {
            writer.write_u16(d.len() as u16).await?;
            writer.write_all(&d).await?;
            next = rx.try_recv().ok();
        }
        writer.flush().await?;
    }
    writer.shutdown().await
}

type Route = mpsc::UnboundedSender<Bytes>;

/// Where a socket's datagrams go.
#[derive(Debug)]
enum Out {
    /// The server's: to the tunnel of each destination.
    Routes(Mutex<HashMap<SocketAddr, Route>>),
    /// A scanner's: to its one tunnel.
    One(Route),
}

/// A QUIC socket over tunnels (see the module docs): the server's over every tunnel
/// ([`TunnelSocket::server`], fed by [`TunnelSocket::serve`]), or a scanner's over one
/// ([`TunnelSocket::client`]).
#[derive(Debug)]
pub struct TunnelSocket {
    local: SocketAddr,
    inbox_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    inbox: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    out: Out,
}

impl TunnelSocket {
    fn new(local: SocketAddr, out: Out) -> TunnelSocket {
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        TunnelSocket {
            local,
            inbox_tx,
            inbox: Mutex::new(inbox),
            out,
        }
    }

    /// The server's socket, standing for the TCP listener at `local`.
    pub fn server(local: SocketAddr) -> Arc<TunnelSocket> {
        Arc::new(Self::new(local, Out::Routes(Mutex::default())))
    }

    /// A scanner's socket over `stream` (TLS established), whose ends are `local` and `peer`.
    pub fn client<S>(stream: S, local: SocketAddr, peer: SocketAddr) -> Arc<TunnelSocket>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (out, out_rx) = mpsc::unbounded_channel();
        let socket = Arc::new(Self::new(local, Out::One(out)));
        let (reader, writer) = tokio::io::split(stream);
        tokio::spawn(write_datagrams(writer, out_rx));
        let inbox = socket.inbox_tx.clone();
        tokio::spawn(async move {
            let _ = read_datagrams(reader, into_inbox(&inbox, peer)).await;
        });
        socket
    }

    /// Carries the datagrams of one tunnel of the server's socket (a TLS stream from `peer`,
    /// handshake done) until it ends.
    pub async fn serve<S>(self: Arc<Self>, peer: SocketAddr, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Out::Routes(routes) = &self.out else {
            return;
        };
        let (reader, writer) = tokio::io::split(stream);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        routes.lock().expect("routes lock").insert(peer, out_tx);
        let writing = tokio::spawn(write_datagrams(writer, out_rx));
        let _ = read_datagrams(reader, into_inbox(&self.inbox_tx, peer)).await;
        routes.lock().expect("routes lock").remove(&peer);
        writing.abort();
    }
}

impl AsyncUdpSocket for TunnelSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let datagram = || Bytes::copy_from_slice(transmit.contents);
        // A tunnel that is gone is a lost datagram, as on UDP.
        match &self.out {
            Out::Routes(routes) => {
                if let Some(r) = routes
                    .lock()
                    .expect("routes lock")
                    .get(&transmit.destination)
                {
                    let _ = r.send(datagram());
                }
            }
            Out::One(r) => {
                let _ = r.send(datagram());
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = self.inbox.lock().expect("inbox lock");
        match inbox.poll_recv(cx) {
            Poll::Ready(Some((addr, d))) => Poll::Ready(deliver(addr, &d, bufs, meta)),
            // The socket holds a sender itself, so this never ends; a scanner's tunnel that
            // ended is noticed by the connection's idle timeout.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_cross_a_stream_whole_and_in_order() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_datagrams(a, rx));
        for d in [&b"one"[..], b"", &[7u8; 1500][..]] {
            tx.send(Bytes::copy_from_slice(d)).unwrap();
        }
        drop(tx);
        writer.await.unwrap().unwrap();
        let mut got = Vec::new();
        read_datagrams(b, |d| {
            got.push(d);
            true
        })
        .await
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(&got[0][..], b"one");
        assert!(got[1].is_empty());
        assert_eq!(got[2].len(), 1500);
    }

    #[tokio::test]
    async fn an_oversized_datagram_ends_the_tunnel_before_it_is_read() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&u16::MAX.to_be_bytes()).await.unwrap();
        let mut got = 0;
        let r = read_datagrams(b, |_| {
            got += 1;
            true
        })
        .await;
        assert!(r.is_err());
        assert_eq!(got, 0);
    }

    #[tokio::test]
    async fn a_truncated_datagram_is_an_error_not_a_short_read() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 10, 1, 2, 3]).await.unwrap();
        drop(a);
        let r = read_datagrams(b, |_| true).await;
        assert!(r.is_err());
    }
}
