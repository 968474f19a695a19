//! The transport ceiling: raw bulk upload over quinn on loopback, with Quire's own TLS
//! configuration (TLS 1.3, ring, ALPN `quire/1`) and flow-control windows but none of
//! Quire's protocol or pipeline. The server reads and drops every byte; the client writes
//! `total` bytes spread over `streams` streams of one connection. Whatever Quire reaches
//! end to end is measured against this, on the same machine and in the same run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server's transport settings, as `quire serve` on its defaults uses them (streams
/// per connection, windows, timeouts).
fn server_transport() -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let config = quire_server::config::ServerConfig::load(None, None, None)?;
    Ok(Arc::new(quire_server::transport_config(&config)))
}

/// A loopback server that drains streams, and a client connected to it.
pub struct Pair {
    server: quinn::Endpoint,
    client: quinn::Endpoint,
    pub conn: quinn::Connection,
    _dir: tempfile::TempDir,
}

impl Pair {
    /// Starts the draining server and connects to it. Call inside a tokio runtime.
    pub async fn start() -> anyhow::Result<Pair> {
        let dir = tempfile::tempdir()?;
        let id = quire_server::identity::Identity::dev(dir.path())?;
        let certs = std::sync::Arc::new(quire_server::identity::CertResolver::new(&id)?);
        let mut sc = quire_server::identity::server_config(certs)?;
        sc.transport_config(server_transport()?);
        let server = quinn::Endpoint::server(sc, "127.0.0.1:0".parse()?)?;
        let addr: SocketAddr = server.local_addr()?;
        let accept = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    // As after a scanner's Hello: its share of the receive budget, alone.
                    conn.set_receive_window(
                        quinn::VarInt::from_u64(quire_server::connection_window(1))
                            .expect("window fits"),
                    );
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            // Chunks are dropped as they come: no copy, no accumulation.
                            while let Ok(Some(_)) = recv.read_chunk(usize::MAX, true).await {}
                            let _ = send.write_all(b"k").await;
                            let _ = send.finish();
                        });
                    }
                });
            }
        });
        let mut cc = quire_client::tls::client_config(&id.cert_pem, quire_codecs::wire::ALPN)?;
        cc.transport_config(Arc::new(quire_client::transport_config()));
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        client.set_default_client_config(cc);
        let conn = client.connect(addr, "localhost")?.await?;
        Ok(Pair {
            server,
            client,
            conn,
            _dir: dir,
        })
    }

    /// Uploads `total` bytes over `streams` streams and waits until the server has read them
    /// all. Returns the elapsed time.
    pub async fn upload(&self, total: u64, streams: u32) -> anyhow::Result<Duration> {
        let per_stream = total / u64::from(streams.max(1));
        let block = bytes::Bytes::from(vec![0x5au8; 256 * 1024]);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..streams.max(1) {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            let block = block.clone();
            tasks.push(tokio::spawn(async move {
                let mut left = per_stream;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    send.write_chunk(block.slice(..n)).await?;
                    left -= n as u64;
                }
                send.finish()?;
                let mut ack = [0u8; 1];
                recv.read_exact(&mut ack).await?;
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(t.elapsed())
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.client.wait_idle().await;
        self.server.close(0u32.into(), b"done");
    }
}

/// One measurement: MB/s (10^6 bytes) of a `total`-byte upload over `streams` streams, best
/// of `rounds` on one connection.
pub async fn ceiling_mb_per_s(total: u64, streams: u32, rounds: u32) -> anyhow::Result<f64> {
    let pair = Pair::start().await?;
    pair.upload(total / 8, streams).await?; // warm up: congestion window, allocations
    let mut best = Duration::MAX;
    for _ in 0..rounds.max(1) {
        best = best.min(pair.upload(total, streams).await?);
    }
    pair.close().await;
    Ok(total as f64 / best.as_secs_f64() / 1e6)
}
