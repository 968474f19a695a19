//! QUIC carried over TLS over TCP, for networks that drop UDP.
//!
//! Many corporate networks let nothing but TCP out. There a scanner opens one TLS connection
//! (TLS 1.3 or 1.2, ALPN `quire-tcp/1`) to the server's TCP port and both ends send their QUIC
//! datagrams through it, each prefixed with its length (2 bytes, big-endian). Everything above
//! the datagrams is unchanged: the same QUIC connection with its streams, the same frames,
//! authentication, limits, metrics and audit — only the path differs. The sockets below are
//! quinn's [`AsyncUdpSocket`] over such connections: [`ServerSocket`] gathers the datagrams of
//! every tunnel into one socket for the server's second endpoint (each tunnel's TCP peer
//! address standing for the datagrams' source), and [`ClientSocket`] is a scanner's one
//! tunnel.

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
        let mut buf = BytesMut::zeroed(len);
        reader.read_exact(&mut buf).await?;
        if !put(buf.freeze()) {
            return Ok(());
        }
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

/// The server's socket over every tunnel (see the module docs).
#[derive(Debug)]
pub struct ServerSocket {
    local: SocketAddr,
    inbox_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    inbox: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    routes: Mutex<HashMap<SocketAddr, Route>>,
}

impl ServerSocket {
    /// A socket standing for the TCP listener at `local`.
    pub fn new(local: SocketAddr) -> Arc<ServerSocket> {
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        Arc::new(ServerSocket {
            local,
            inbox_tx,
            inbox: Mutex::new(inbox),
            routes: Mutex::default(),
        })
    }

    /// How many tunnels are open.
    pub fn tunnels(&self) -> usize {
        self.routes.lock().expect("routes lock").len()
    }

    /// Carries the datagrams of one tunnel (a TLS stream from `peer`, handshake done) until
    /// it ends.
    pub async fn serve<S>(self: Arc<Self>, peer: SocketAddr, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .expect("routes lock")
            .insert(peer, out_tx);
        let writing = tokio::spawn(write_datagrams(writer, out_rx));
        let inbox = self.inbox_tx.clone();
        let _ = read_datagrams(reader, |d| {
            inbox.try_send((peer, d)).is_ok() || !inbox.is_closed()
        })
        .await;
        self.routes.lock().expect("routes lock").remove(&peer);
        writing.abort();
    }
}

impl AsyncUdpSocket for ServerSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // A tunnel that is gone is a lost datagram, as on UDP.
        if let Some(route) = self
            .routes
            .lock()
            .expect("routes lock")
            .get(&transmit.destination)
        {
            let _ = route.send(Bytes::copy_from_slice(transmit.contents));
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
            // The socket holds a sender itself: never closed while it lives.
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

/// A scanner's one tunnel to the server at `peer`.
#[derive(Debug)]
pub struct ClientSocket {
    local: SocketAddr,
    peer: SocketAddr,
    inbox: Mutex<mpsc::Receiver<Bytes>>,
    out: Route,
}

impl ClientSocket {
    /// Starts carrying datagrams over `stream` (TLS established), whose ends are `local` and
    /// `peer`.
    pub fn start<S>(stream: S, local: SocketAddr, peer: SocketAddr) -> Arc<ClientSocket>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let (in_tx, inbox) = mpsc::channel(INBOX);
        let (out, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_datagrams(writer, out_rx));
        tokio::spawn(async move {
            // A full inbox drops the datagram, as a full socket buffer would.
            let _ = read_datagrams(reader, |d| {
                !matches!(in_tx.try_send(d), Err(mpsc::error::TrySendError::Closed(_)))
            })
            .await;
        });
        Arc::new(ClientSocket {
            local,
            peer,
            inbox: Mutex::new(inbox),
            out,
        })
    }
}

impl AsyncUdpSocket for ClientSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let _ = self.out.send(Bytes::copy_from_slice(transmit.contents));
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
            Poll::Ready(Some(d)) => Poll::Ready(deliver(self.peer, &d, bufs, meta)),
            // The tunnel ended: the connection's idle timeout notices.
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
    async fn a_truncated_datagram_is_an_error_not_a_short_read() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 10, 1, 2, 3]).await.unwrap();
        drop(a);
        let r = read_datagrams(b, |_| true).await;
        assert!(r.is_err());
    }
}
