//! Periodic work one node at a time: a session-level advisory lock per kind of work, held on
//! a connection of its own for as long as the node lives. When the node dies its connection
//! goes and PostgreSQL releases the lock; the next node to ask takes the work over.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Mutex;
use tracing::warn;

use super::{pg, PgMeta};
use crate::meta::MetaError;

/// The connection holding this node's locks, and which works they are.
#[derive(Default)]
pub(super) struct Leases {
    client: Option<tokio_postgres::Client>,
    held: HashSet<String>,
}

/// A stable lock key for `work` (FNV-1a of its name, so every node computes the same).
fn key(work: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"quire-lease:".iter().chain(work.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

impl PgMeta {
    /// Whether this node holds (or now takes) `work`.
    pub(super) fn lead_work(&self, work: &str) -> Result<bool, MetaError> {
        let (leases, config, work) = (
            self.leases.clone(),
            self.listen_config.clone(),
            work.to_string(),
        );
        self.call(move |_pool| async move { lead(&leases, &config, &work).await })
    }
}

async fn lead(
    leases: &Arc<Mutex<Leases>>,
    config: &tokio_postgres::Config,
    work: &str,
) -> Result<bool, MetaError> {
    let mut l = leases.lock().await;
    if l.client.as_ref().is_some_and(|c| c.is_closed()) {
        // The connection went, and the locks with it: another node may hold them now.
        warn!("lost the connection holding this node's periodic work; asking again");
        l.client = None;
        l.held.clear();
    }
    if l.held.contains(work) {
        return Ok(true);
    }
    if l.client.is_none() {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(pg)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        l.client = Some(client);
    }
    let client = l.client.as_ref().expect("connected above");
    let taken: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key(work)])
        .await
        .map_err(pg)?
        .get(0);
    if taken {
        l.held.insert(work.to_string());
    }
    Ok(taken)
}
