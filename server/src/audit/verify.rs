//! Reading a tenant's trail back: `audit verify` (the chain in the log against the signed
//! checkpoints in the tenant's store) and `audit export` (the tenant's records, checkpoints
//! and public keys as JSON lines, for an independent verifier).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use quire_audit::checkpoint::{object_key, object_prefix, Checkpoint};
use quire_audit::record::{parse_line, Line};
use quire_audit::{ChainVerifier, LogLine, Start};
use quire_codecs::wire::AuditReport;
use quire_pipeline::PipelineError;
use quire_storage::StoreError;
use tokio::sync::mpsc;

use super::checkpoints::{now_unix_ms, public_key};
use crate::State;

/// Most checkpoint objects fetched at once.
const FETCH_CONCURRENCY: usize = 16;
/// Export chunks: lines are batched into Data frames of about this size.
const EXPORT_CHUNK: usize = 256 * 1024;

/// Why a trail could not be read (not what was found wrong with it: that is the report).
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrailError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] PipelineError),
    #[error("cannot read the audit log: {0}")]
    Log(std::io::Error),
}

/// A tenant's checkpoints, signatures checked, and the public keys that checked them.
struct Signed {
    checkpoints: Vec<Checkpoint>,
    keys: BTreeMap<String, [u8; 32]>,
    /// The first checkpoint object that is not a valid checkpoint of this chain.
    problem: Option<String>,
}

async fn signed_checkpoints(state: &State, tenant: &str) -> Result<Signed, TrailError> {
    let store = state.pipeline.store_for(tenant);
    let listed = store.list(&object_prefix(tenant)).await?;
    let fetched: Vec<(String, Bytes)> = futures::stream::iter(listed)
        .map(|o| async move { store.get(&o.key).await.map(|b| (o.key, b)) })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let mut out = Signed {
        checkpoints: Vec::with_capacity(fetched.len()),
        keys: BTreeMap::new(),
        problem: None,
    };
    for (key, bytes) in fetched {
        let c = match Checkpoint::parse(&bytes) {
            Ok(c) if c.tenant == tenant && object_key(tenant, c.seq) == key => c,
            Ok(_) => {
                out.problem.get_or_insert(format!(
                    "checkpoint object {key} names another chain or record: it was moved or forged"
                ));
                continue;
            }
            Err(e) => {
                out.problem
                    .get_or_insert(format!("checkpoint object {key}: {e}"));
                continue;
            }
        };
        if !out.keys.contains_key(&c.key_id) {
            match public_key(&state.pipeline, &c.key_id).await? {
                Some(k) => {
                    out.keys.insert(c.key_id.clone(), k);
                }
                None => {
                    out.problem.get_or_insert(format!(
                        "checkpoint object {key} is signed by {}, a key this server's vault does not hold: forged, or the vault was replaced",
                        c.key_id
                    ));
                    continue;
                }
            }
        }
        match c.verify(&out.keys[&c.key_id]) {
            Ok(()) => out.checkpoints.push(c),
            Err(e) => {
                out.problem
                    .get_or_insert(format!("checkpoint object {key}: {e}"));
            }
        }
    }
    out.checkpoints.sort_by_key(|c| c.seq);
    Ok(out)
}

/// Checks `tenant`'s chain in the log and against every signed checkpoint.
pub(crate) async fn verify(state: &State, tenant: &str) -> Result<AuditReport, TrailError> {
    let signed = signed_checkpoints(state, tenant).await?;
    let audit = state.audit.clone();
    let t = tenant.to_string();
    let checkpoints = signed.checkpoints;
    let report = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut v = ChainVerifier::new(&t, Start::Genesis, checkpoints);
        for line in audit.chains().lines(&t)? {
            v.feed(&line?);
            if v.failed() {
                break;
            }
        }
        Ok(v.finish())
    })
    .await
    .map_err(|e| TrailError::Log(std::io::Error::other(e.to_string())))?
    .map_err(TrailError::Log)?;
    let problem = match (&report.problem, signed.problem) {
        (Some(p), _) => p.to_string(),
        (None, Some(p)) => p,
        (None, None) => String::new(),
    };
    Ok(AuditReport {
        tenant: tenant.to_string(),
        records: report.records,
        legacy_records: report.legacy_records,
        head_seq: report.head_seq,
        checkpoints: report.checkpoints_checked,
        last_checkpoint_seq: report.last_checkpoint_seq,
        problem,
    })
}

/// Sends `tenant`'s trail from `since_unix_ms` to `out` as JSON lines: a header with the
/// public keys, the records exactly as logged, then the checkpoints that cover them.
pub(crate) async fn export(
    state: &State,
    tenant: &str,
    since_unix_ms: u64,
    out: mpsc::Sender<Bytes>,
) -> Result<(), TrailError> {
    let signed = signed_checkpoints(state, tenant).await?;
    let header = serde_json::json!({
        "type": "quire-audit-export",
        "v": 1,
        "tenant": tenant,
        "since_unix_ms": since_unix_ms,
        "exported_unix_ms": now_unix_ms(),
        "public_keys": signed.keys.iter().map(|(id, k)| (id.clone(), hex::encode(k))).collect::<BTreeMap<_, _>>(),
    });
    let _ = out.send(Bytes::from(format!("{header}\n"))).await;
    let audit = state.audit.clone();
    let (t, records_out) = (tenant.to_string(), out.clone());
    let first_seq = tokio::task::spawn_blocking(move || -> std::io::Result<Option<u64>> {
        let mut chunk = BytesMut::new();
        let mut first_seq = None;
        for line in audit.chains().lines(&t)? {
            let LogLine::Line { bytes, .. } = line? else {
                continue;
            };
            let (tenant, ts, seq) = match parse_line(&bytes) {
                Ok(Line::Chained(r)) => (r.tenant, r.ts_unix_ms, Some(r.seq)),
                Ok(Line::Legacy { tenant, ts_unix_ms }) => (tenant, ts_unix_ms, None),
                Err(_) => continue,
            };
            if tenant != t || ts < since_unix_ms {
                continue;
            }
            first_seq = first_seq.or(seq);
            chunk.extend_from_slice(&bytes);
            chunk.extend_from_slice(b"\n");
            if chunk.len() >= EXPORT_CHUNK
                && records_out.blocking_send(chunk.split().freeze()).is_err()
            {
                return Ok(first_seq);
            }
        }
        if !chunk.is_empty() {
            let _ = records_out.blocking_send(chunk.freeze());
        }
        Ok(first_seq)
    })
    .await
    .map_err(|e| TrailError::Log(std::io::Error::other(e.to_string())))?
    .map_err(TrailError::Log)?;
    let mut tail = String::new();
    for c in signed
        .checkpoints
        .iter()
        .filter(|c| first_seq.is_some_and(|f| c.seq >= f))
    {
        tail.push_str(&format!("{{\"checkpoint\":{}}}\n", c.to_json()));
    }
    if !tail.is_empty() {
        let _ = out.send(Bytes::from(tail)).await;
    }
    Ok(())
}
