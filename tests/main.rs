//! Quire's integration tests, built as one binary: each file beside this one is one concern
//! (a module named after it), all sharing the harness in `common/`. One binary instead of one
//! per file keeps a cold build to a single link of the whole server, which is what let the
//! suite fit a CI machine's disk. Run one concern with `cargo test --test integration --
//! resume::`, one test with its full name.

mod common;

mod agent;
mod audit_chain;
mod audit_events;
mod backup;
mod bootstrap;
mod bulk_jobs;
mod check;
mod cli;
mod cloud_pipeline;
mod congestion;
mod corpus_roundtrip;
mod crash;
mod drain;
mod edge_pages;
mod enroll;
mod format_vectors;
mod honest_errors;
mod hostile_sockets;
mod isolation;
mod job_ownership;
mod key_custody;
mod keys;
mod limits;
mod meta_conformance;
mod metrics;
mod outage;
mod packaging;
mod postgres_audit;
mod postgres_fleet;
mod postgres_meta;
mod postgres_nodes;
mod postgres_tls;
mod production;
mod push_input;
mod quickstart;
mod refusals;
mod replication;
mod resume;
mod retention;
mod roles;
mod scrub;
mod signed_manifests;
mod storage_conformance;
mod timestamps;
mod tls_ca;
mod transport;
mod udp_blocked;
mod windows;
