//! Pure encoders and decoders for Quire, with no sockets, files or clocks.
//!
//! - [`wire`]: the `quire/1` frames scanners and the server exchange over QUIC streams.
//! - [`sealed`]: the sealed object format every stored byte is written in.
//! - [`credential`]: the credential files scanners and administrators hold.
//! - [`lists`]: lists longer than one frame, split and joined again.
//! - [`spool_record`]: the commit record of a spool record.
//! - [`manifest`]: the job manifest, itself stored as a sealed object.
//! - [`signed`]: the manifest's signature, and the signed manifest document anyone can check.
//!
//! Keeping these sans-IO (as quinn-proto and rustls do) means every parser is tested and
//! fuzzed by feeding bytes, and the server shell stays thin.
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod credential;
#[doc(hidden)]
pub mod fuzzing;
pub mod lists;
pub mod manifest;
pub mod sealed;
pub mod signed;
pub mod spool_record;
pub mod timestamp;
pub mod wire;
