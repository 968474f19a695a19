//! UDP sockets with room to receive a burst.
//!
//! A QUIC endpoint reads its socket from one task. Whatever arrives while that task waits
//! for a core queues in the socket's receive buffer, and what does not fit is dropped by the
//! kernel before Quire sees it. Senders cannot tell those drops from a lossy network: on an
//! 80 ms, 1 Gbit/s path with the kernel's default buffer (208 KiB), a busy server dropped
//! eleven packets for every one the link lost, and the scanners slowed down accordingly
//! (docs/PERFORMANCE.md, "Drops before the link"). So endpoints ask for a larger buffer, and
//! the server says so when the kernel grants less.

use std::net::{SocketAddr, UdpSocket};

/// The receive buffer endpoints ask for: about 65 ms of a 1 Gbit/s link in payload (the
/// kernel counts each datagram's bookkeeping against the buffer too, about as much again).
pub const RECEIVE_BUFFER: usize = 16 * 1024 * 1024;

/// What a socket's receive buffer came to, and where to read what it dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveBuffer {
    /// Bytes asked for.
    pub wanted: usize,
    /// Bytes the kernel reports the buffer holds (Linux counts bookkeeping in it and reports
    /// twice the size it was set to, so a granted request reads as at least `wanted`).
    pub granted: usize,
    /// The socket's inode: its line in the kernel's table of UDP sockets.
    pub inode: Option<u64>,
}

impl ReceiveBuffer {
    /// Datagrams the kernel dropped because this socket's buffer was full, since it was
    /// bound (Linux: the `drops` column of `/proc/net/udp`); `None` where that is not kept.
    pub fn drops(&self) -> Option<u64> {
        let inode = self.inode?;
        ["/proc/self/net/udp", "/proc/self/net/udp6"]
            .iter()
            .find_map(|table| drops_in(&read_bounded(table)?, inode))
    }

    /// What a process that may not exceed the kernel's cap (`net.core.rmem_max` = `cap`)
    /// gets when it asks for `wanted`: Linux caps the size set, half of what it then reports
    /// (see [`bind`]).
    pub fn under_cap(wanted: usize, cap: usize) -> ReceiveBuffer {
        ReceiveBuffer {
            wanted,
            granted: (wanted / 2).min(cap) * 2,
            inode: None,
        }
    }

    /// The kernel capped the buffer below what was asked for.
    pub fn is_short(&self) -> bool {
        self.granted < self.wanted
    }

    /// What an operator should be told when the buffer is short: what happens, and the
    /// sysctl that lifts the cap.
    pub fn advice(&self) -> String {
        format!(
            "the UDP receive buffer is {} KiB where {} KiB were asked for: the kernel's net.core.rmem_max caps it. Datagrams that arrive while the server is busy are then dropped before it reads them, and scanners slow down as if the network had lost them. Raise the cap: `sysctl -w net.core.rmem_max={}` (and in /etc/sysctl.d to keep it)",
            self.granted / 1024,
            self.wanted / 1024,
            self.wanted
        )
    }
}

/// Binds a UDP socket at `addr` and asks for a receive buffer of `wanted` bytes: as much as
/// the kernel's cap allows, or all of it where the process may exceed the cap
/// (`CAP_NET_ADMIN`). The buffer is only a limit: memory is taken as datagrams queue.
pub fn bind(addr: SocketAddr, wanted: usize) -> std::io::Result<(UdpSocket, ReceiveBuffer)> {
    use rustix::net::{socket_with, sockopt, AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv6() {
        AddressFamily::INET6
    } else {
        AddressFamily::INET
    };
    // Not inherited by programs the process starts.
    let fd = socket_with(family, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
    if addr.is_ipv6() {
        // Both families on an IPv6 socket, as quinn's own client endpoint has them; where
        // the system refuses, IPv6 alone.
        let _ = sockopt::set_ipv6_v6only(&fd, false);
    }
    rustix::net::bind(&fd, &addr)?;
    let socket = UdpSocket::from(fd);
    let buffer = enlarge_receive_buffer(&socket, wanted)?;
    Ok((socket, buffer))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn enlarge_receive_buffer(socket: &UdpSocket, wanted: usize) -> std::io::Result<ReceiveBuffer> {
    use rustix::net::sockopt;
    // Linux doubles the value set (room for bookkeeping) and reports the doubled size.
    let set = wanted / 2;
    // Past the cap only with CAP_NET_ADMIN; without it, the capped request below.
    if sockopt::set_socket_recv_buffer_size_force(socket, set).is_err() {
        sockopt::set_socket_recv_buffer_size(socket, set)?;
    }
    let granted = sockopt::socket_recv_buffer_size(socket)?;
    let inode = rustix::fs::fstat(socket).ok().map(|st| st.st_ino);
    Ok(ReceiveBuffer {
        wanted,
        granted,
        inode,
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn enlarge_receive_buffer(socket: &UdpSocket, wanted: usize) -> std::io::Result<ReceiveBuffer> {
    use rustix::net::sockopt;
    // Elsewhere the value set is the value reported; the kernel refuses what exceeds its
    // cap, so step down until it takes one.
    let mut set = wanted;
    while sockopt::set_socket_recv_buffer_size(socket, set).is_err() && set > 64 * 1024 {
        set /= 2;
    }
    let granted = sockopt::socket_recv_buffer_size(socket)?;
    Ok(ReceiveBuffer {
        wanted,
        granted,
        inode: None,
    })
}

/// The kernel's table of UDP sockets at `path`, up to 32 MiB (a namespace with a hundred
/// thousand sockets; what lies beyond is not read).
fn read_bounded(path: &str) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(32 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The `drops` column of the socket with `inode` in a `/proc/net/udp` table: after the
/// header, one line per socket whose tenth field is the inode and whose last is the drops.
fn drops_in(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 13 || fields[9].parse::<u64>().ok()? != inode {
            return None;
        }
        fields.last()?.parse().ok()
    })
}

/// Binds a QUIC endpoint at `addr` (a server if `server` is given) on a socket from
/// [`bind`], and says what its receive buffer came to.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<(quinn::Endpoint, ReceiveBuffer)> {
    let (socket, buffer) = bind(addr, RECEIVE_BUFFER)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime to run the QUIC endpoint on"))?;
    let endpoint = quinn::Endpoint::new(crate::cid::endpoint_config(), server, socket, runtime)?;
    Ok((endpoint, buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn kernel_cap() -> Option<usize> {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The buffer grows past the kernel's default (208 KiB) to the request, or to the cap.
    #[test]
    fn the_receive_buffer_is_what_was_asked_for_or_the_kernels_cap() {
        let wanted = 8 * 1024 * 1024;
        let (socket, buffer) = bind(loopback(), wanted).unwrap();
        assert_eq!(buffer.wanted, wanted);
        assert_eq!(
            buffer.granted,
            rustix::net::sockopt::socket_recv_buffer_size(&socket).unwrap()
        );
        let may_exceed_cap = rustix::process::geteuid().is_root();
        match kernel_cap() {
            _ if may_exceed_cap => assert!(!buffer.is_short(), "{buffer:?}"),
            // Linux grants twice the capped request.
            Some(cap) if cap * 2 < wanted => {
                assert_eq!(buffer.granted, cap * 2);
                assert!(buffer.is_short());
            }
            _ => assert!(!buffer.is_short(), "{buffer:?}"),
        }
        assert!(buffer.granted > 212_992 * 2, "{buffer:?}");
    }

    #[test]
    fn the_advice_names_the_sysctl_and_the_sizes() {
        let short = ReceiveBuffer {
            wanted: RECEIVE_BUFFER,
            granted: 425_984,
            inode: None,
        };
        assert!(short.is_short());
        let advice = short.advice();
        assert!(advice.contains("net.core.rmem_max=16777216"), "{advice}");
        assert!(advice.contains("416 KiB"), "{advice}");
        assert!(!ReceiveBuffer {
            wanted: 10,
            granted: 10,
            inode: None,
        }
        .is_short());
    }

    /// The drops are read from the socket's own line, found by its inode.
    #[test]
    fn drops_are_read_from_the_sockets_line() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:1151 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  2: 0200000A:1151 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 99\n";
        assert_eq!(drops_in(table, 4242), Some(17));
        assert_eq!(drops_in(table, 4243), Some(99));
        assert_eq!(drops_in(table, 1), None);
        assert_eq!(drops_in("header only\n", 4242), None);
        assert_eq!(drops_in("h\n  1: short line 4242\n", 4242), None);
    }

    /// A real socket's line is found, and datagrams that overflow its buffer are counted.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_sockets_overflow_is_counted() {
        let (socket, buffer) = bind(loopback(), 4096).unwrap();
        assert_eq!(buffer.drops(), Some(0));
        let sender = UdpSocket::bind(loopback()).unwrap();
        let to = socket.local_addr().unwrap();
        // Nobody reads: a few hundred datagrams overflow any buffer this small.
        for _ in 0..400 {
            sender.send_to(&[7u8; 1200], to).unwrap();
        }
        assert!(buffer.drops().unwrap() > 0, "{buffer:?}");
    }

    #[test]
    fn the_socket_is_not_inherited() {
        let (socket, _) = bind(loopback(), 1 << 20).unwrap();
        let flags = rustix::io::fcntl_getfd(&socket).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    /// An IPv6 socket also takes IPv4 (as quinn's own client endpoint does).
    #[test]
    fn an_ipv6_socket_takes_both_families() {
        let Ok((socket, _)) = bind("[::]:0".parse().unwrap(), 1 << 20) else {
            return; // no IPv6 on this machine
        };
        assert!(!rustix::net::sockopt::ipv6_v6only(&socket).unwrap());
        let port = socket.local_addr().unwrap().port();
        let sender = UdpSocket::bind(loopback()).unwrap();
        sender
            .send_to(b"v4 to a v6 socket", ("127.0.0.1", port))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"v4 to a v6 socket");
    }

    /// An endpoint on such a socket carries a connection (the socket is handed to quinn
    /// whole).
    #[tokio::test]
    async fn an_endpoint_on_the_enlarged_socket_accepts_connections() {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
            )
            .unwrap();
        let mut tls = tls;
        tls.alpn_protocols = vec![b"test".to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let server_config = quinn::ServerConfig::with_crypto(std::sync::Arc::new(quic));
        let (server, buffer) = endpoint(loopback(), Some(server_config)).unwrap();
        assert!(buffer.granted > 0);
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let mut recv = conn.accept_uni().await.unwrap();
            recv.read_to_end(1 << 20).await.unwrap()
        });
        let (mut client, _) = endpoint(loopback(), None).unwrap();
        client.set_default_client_config(
            crate::tls::client_config(&key.cert.pem(), b"test").unwrap(),
        );
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let mut send = conn.open_uni().await.unwrap();
        send.write_all(b"over the enlarged socket").await.unwrap();
        send.finish().unwrap();
        assert_eq!(accept.await.unwrap(), b"over the enlarged socket");
    }
}
