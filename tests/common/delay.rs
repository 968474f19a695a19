//! A UDP relay on loopback that holds every datagram for a fixed time each way: a long link
//! for transport tests (this kernel has no netem). One client at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Relays between the first client that sends to the returned address and `server`, each
/// datagram `one_way` late. Runs until the Tokio runtime ends.
pub async fn delay_relay(server: SocketAddr, one_way: Duration) -> SocketAddr {
    let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut client = None;
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let to = if from == server {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                client = Some(from);
                server
            };
            let (datagram, sock) = (buf[..n].to_vec(), sock.clone());
            tokio::spawn(async move {
                tokio::time::sleep(one_way).await;
                let _ = sock.send_to(&datagram, to).await;
            });
        }
    });
    addr
}
