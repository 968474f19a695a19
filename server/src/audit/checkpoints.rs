//! Checkpoints: every chain's head signed with the server's audit key and written once to
//! the chain's tenant's object store, at least every `[audit] checkpoint_records` records
//! or `checkpoint_interval_secs` seconds.
//!
//! The audit key is derived from a key the vault holds under a name no tenant can have
//! ([`AUDIT_KEY_OWNER`]), so it is kept exactly as well as the tenants' keys: wrapped by the
//! master key, a KMS or an HSM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_audit::checkpoint::{self, AuditSigner, Checkpoint};
use quire_pipeline::{Pipeline, PipelineError};
use quire_storage::StoreError;
use tracing::{debug, error, warn};

use crate::State;

/// The vault name of the audit signing key: `-` cannot begin a tenant id.
pub(crate) const AUDIT_KEY_OWNER: &str = "-audit";

/// The signing key in use (the vault key's newest version).
pub(crate) async fn signer(pipeline: &Pipeline) -> Result<AuditSigner, PipelineError> {
    let (kek, key) = pipeline.current_key(AUDIT_KEY_OWNER).await?;
    Ok(AuditSigner::derive(key.expose(), kek.version))
}

/// The public key of signing key `key_id`, derived again from the vault (never taken from
/// the checkpoint that claims it). `None` for a key id this server never issued.
pub(crate) async fn public_key(
    pipeline: &Pipeline,
    key_id: &str,
) -> Result<Option<[u8; 32]>, PipelineError> {
    let Some(version) = checkpoint::key_version(key_id) else {
        return Ok(None);
    };
    let derive = |key: &[u8; 32]| AuditSigner::derive(key, version).public_key();
    crate::signing::derived_public_key(pipeline, AUDIT_KEY_OWNER, version, derive).await
}

/// Signs and stores the head of every chain with records no checkpoint covers. Returns how
/// many checkpoints were written; a chain whose store is down is tried again next time.
pub(crate) async fn checkpoint_now(state: &State) -> Result<usize, PipelineError> {
    let audit = state.audit.clone();
    let heads = match super::off_workers(move || audit.chains().unsigned_heads()).await {
        Ok(heads) => heads,
        Err(e) => {
            state.metrics.audit_checkpoint("failed");
            warn!(error = %e, "cannot read the audit chains' heads to sign them; retrying later");
            return Ok(0);
        }
    };
    if heads.is_empty() {
        return Ok(0);
    }
    let signer = signer(&state.pipeline).await?;
    let mut written = 0;
    for (tenant, head) in heads {
        let key = checkpoint::object_key(&tenant, head.seq);
        let store = state.pipeline.store_for(&tenant);
        if state.audit.first_comparison(&tenant) {
            behind_the_store(state, &tenant).await;
        }
        let cp = signer.sign(&tenant, head.seq, head.hash, now_unix_ms());
        match store.put_new(&key, cp.to_json().into()).await {
            Ok(()) => {
                note_signed(state, &tenant, head.seq).await;
                state.metrics.audit_checkpoint("written");
                written += 1;
            }
            Err(StoreError::AlreadyExists(_)) => {
                // Write-once: this record was signed before. The same hash is a retry; a
                // different one means this log is not the one that was signed.
                let earlier = store.get(&key).await.ok();
                let same = earlier
                    .as_deref()
                    .and_then(|b| Checkpoint::parse(b).ok())
                    .is_some_and(|c| c.hash == head.hash);
                if !same {
                    state.metrics.audit_checkpoint("conflict");
                    error!(tenant = %tenant, seq = head.seq, object = %key, "the audit log disagrees with a signed checkpoint of the same record: it was truncated, rewritten or restored from an older copy. Run `quire admin audit verify --tenant` and investigate");
                }
                note_signed(state, &tenant, head.seq).await;
            }
            Err(e) => {
                state.metrics.audit_checkpoint("failed");
                warn!(tenant = %tenant, error = %e, "cannot store an audit checkpoint; retrying later");
            }
        }
    }
    debug!(written, "audit checkpoints written");
    Ok(written)
}

/// Records that `tenant`'s chain is signed up to `seq` (a failure means only that it is
/// signed again next time).
async fn note_signed(state: &State, tenant: &str, seq: u64) {
    let (audit, t) = (state.audit.clone(), tenant.to_string());
    if let Err(e) = super::off_workers(move || audit.chains().signed(&t, seq)).await {
        warn!(tenant = %tenant, error = %e, "cannot note an audit checkpoint as written; it is written again next time");
    }
}

/// Once per chain and process: a checkpoint in the store beyond the chain's head means the
/// trail lost records that were signed (truncated, or an older copy restored). Only noticed
/// and reported here; `audit verify` names the records. The head is read after the listing,
/// so a record another node appended and signed meanwhile is not mistaken for a loss.
async fn behind_the_store(state: &State, tenant: &str) {
    let store = state.pipeline.store_for(tenant);
    let newest = match store.list(&checkpoint::object_prefix(tenant)).await {
        Ok(listed) => listed
            .iter()
            .filter_map(|o| {
                o.key
                    .rsplit('/')
                    .next()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max(),
        Err(e) => {
            warn!(tenant = %tenant, error = %e, "cannot list audit checkpoints to compare them with the log");
            return;
        }
    };
    let Some(newest) = newest else { return };
    let (audit, t) = (state.audit.clone(), tenant.to_string());
    let head = match super::off_workers(move || audit.chains().head(&t)).await {
        Ok(head) => head.map_or(0, |h| h.seq),
        Err(e) => {
            warn!(tenant = %tenant, error = %e, "cannot read the audit chain's head to compare it with the checkpoints");
            return;
        }
    };
    if newest > head {
        state.metrics.audit_checkpoint("conflict");
        error!(tenant = %tenant, log_head = head, signed = newest, "the audit log disagrees with a signed checkpoint: a record beyond the log's end was signed, so the log was truncated or restored from an older copy. Run `quire admin audit verify --tenant` and investigate");
    }
}

/// Checkpoints chains when one reaches `[audit] checkpoint_records` new records, and every
/// `interval` while any has unsigned records.
pub(crate) fn spawn(state: Arc<State>, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tick.tick().await;
            let due = state.audit.chains().take_due();
            if !due && last.elapsed() < interval {
                continue;
            }
            last = Instant::now();
            if let Err(e) = checkpoint_now(&state).await {
                state.metrics.audit_checkpoint("failed");
                warn!(error = %e, "cannot sign audit checkpoints (the vault did not give the audit key); retrying later");
            }
        }
    });
}

pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
