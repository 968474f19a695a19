//! Quire: the ingest engine between fleets of document scanners and object stores.
//!
//! This crate is the thin IO shell and the command line: the QUIC server ([`server`]), the
//! scanner and admin client ([`client`]), configuration, TLS and metadata. The protocol and
//! object format live in `quire-codecs`, the stages a page passes through in
//! `quire-pipeline`, and the object stores in `quire-storage`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod client;
pub mod config;
pub mod credential;
pub mod meta;
pub mod retention;
pub mod server;
pub mod stream;
pub mod tls;

use zeroize::Zeroizing;

/// A fresh 256-bit credential secret.
pub fn random_secret() -> Zeroizing<[u8; 32]> {
    let mut s = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut s[..]).expect("the OS random source failed");
    s
}
