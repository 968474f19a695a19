//! What both ends of a Quire connection share: frames over QUIC streams ([`stream`]), TLS
//! configuration and certificate pins ([`tls`]), credential files ([`credential`]), UDP
//! sockets with room for a burst ([`udp`]), and the connection IDs endpoints hand out
//! ([`cid`]).
//!
//! The client crate (`quire-client`) and the server crate (`quire-server`) both build on this
//! one, so neither depends on the other and a scanner vendor's build never pulls in the
//! server's storage stack.
#![forbid(unsafe_code)]

pub mod address;
pub mod cid;
pub mod congestion;
pub mod credential;
pub mod stream;
pub mod tls;
pub mod tunnel;
pub mod udp;

use zeroize::Zeroizing;

/// The round-trip time both ends assume before the first is measured. Scanners reach their
/// server across a LAN or a branch office's WAN (RTT 1–80 ms), not the 333 ms quinn assumes:
/// a lost handshake packet is then sent again after 0.3 s instead of 1 s, inside the client's
/// head start before it tries TCP, so a lossy link does not push it to TCP. On a longer path
/// it costs one spurious resend.
pub const INITIAL_RTT: std::time::Duration = std::time::Duration::from_millis(100);

/// A fresh 256-bit credential secret.
pub fn random_secret() -> Zeroizing<[u8; 32]> {
    let mut s = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut s[..]).expect("the OS random source failed");
    s
}
