//! Periodic work one node at a time: a session-level advisory lock per kind of work, held on
//! a connection of its own for as long as the node lives. When the node dies its connection
//! goes and PostgreSQL releases the lock; the next node to ask takes the work over. Also the
//! nodes' claims on shared rate limits.

use std::collections::{HashMap, HashSet};
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
        let (leases, dial, work) = (self.leases.clone(), self.dial.clone(), work.to_string());
        self.call(move |_pool| async move { lead(&leases, &dial, &work).await })
    }
}

impl PgMeta {
    /// Stores `node`'s claims (replacing its earlier ones, dropping any node's that are a
    /// minute old) and sums the other nodes' live claims on the same keys, in one statement.
    pub(super) fn claims(
        &self,
        node: &str,
        claims: &[(String, f64)],
    ) -> Result<HashMap<String, f64>, MetaError> {
        let node = node.to_string();
        let (keys, rates): (Vec<String>, Vec<f64>) = claims.iter().cloned().unzip();
        let ttl = crate::limits::shares::CLAIM_TTL.as_secs_f64();
        self.with(move |c| async move {
            let rows = c
                .query(
                    "WITH mine AS ( \
                       INSERT INTO limit_claims (node, key, per_sec, updated) \
                       SELECT $1, k, v, clock_timestamp() FROM unnest($2::text[], $3::float8[]) AS c(k, v) \
                       ON CONFLICT (node, key) DO UPDATE \
                         SET per_sec = EXCLUDED.per_sec, updated = EXCLUDED.updated \
                     ), gone AS ( \
                       DELETE FROM limit_claims \
                       WHERE (node = $1 AND NOT (key = ANY($2))) \
                          OR updated < clock_timestamp() - interval '1 minute' \
                     ) \
                     SELECT key, sum(per_sec) FROM limit_claims \
                     WHERE node <> $1 AND key = ANY($2) \
                       AND updated > clock_timestamp() - make_interval(secs => $4) \
                     GROUP BY key",
                    &[&node, &keys, &rates, &ttl],
                )
                .await
                .map_err(pg)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

async fn lead(
    leases: &Arc<Mutex<Leases>>,
    dial: &super::tls::Dial,
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
        let (client, connection) = dial.connect().await.map_err(pg)?;
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
