//! The Quire ingest tier: everything only a server needs.
//!
//! A page's way through this crate, from the QUIC edge to the pipeline:
//! - [`edge`]: the endpoint; accepts connections, holds them at the pre-authentication
//!   [`gate`] (QUIC Retry, per-source caps, a short `Hello` deadline), authenticates them
//!   ([`auth`]) and hands each stream to the request layer; [`windows`] sizes each
//!   connection's receive window (what QUIC may buffer for it) within a memory budget.
//! - `requests`: one function per request kind; every request is first put to the access
//!   [`policy`] (a pure function of principal and request), then admitted by the [`limits`],
//!   then handed to `quire-pipeline` (hash, compress, seal, spool, store).
//! - [`meta`]: the metadata store (devices, tenants, jobs and their pages, grants, holds).
//! - `sweep` and [`retention`]: deleting what is delivered or past its retention.
//! - [`audit`]: the append-only record of every administrative action and document read.
//! - [`config`], [`identity`] (TLS), [`keycheck`] (keys must match the stored data).
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod backup;
pub mod bootstrap;
pub mod check;
pub mod clock;
pub mod config;
mod cutoff;
pub mod drain;
pub mod edge;
pub mod gate;
mod hello;
pub mod identity;
pub mod keycheck;
mod keywatch;
pub mod limits;
pub mod meta;
pub mod metrics;
pub mod policy;
mod ratelog;
mod readiness;
mod requests;
pub mod retention;
mod scrub;
mod signing;
pub mod slots;
mod sweep;
mod timestamps;
mod tunnel;
pub mod windows;

pub use edge::{transport_config, ServeError, Server};
pub use gate::{HELLO_DEADLINE, MAX_PENDING_AUTH, MAX_PENDING_PER_SOURCE};
pub use quire_codecs::wire::{
    CLOSE_AUTH_FAILED, CLOSE_DEVICE_DISABLED, CLOSE_SHUTDOWN, CLOSE_TOO_SLOW,
};
pub use windows::connection_window;

use edge::State;
