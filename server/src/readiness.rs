//! What the operator's listener reports about this server: its metrics with the gauges read
//! at scrape time, and whether it can take pages now (`/readyz`).

use std::time::Duration;

use crate::edge::State;
use crate::metrics::{Operator, Snapshot};

/// Spool use above this share of its capacity makes the server unready: pages would soon wait
/// and then be refused as Busy.
pub const SPOOL_HIGH_WATER: f64 = 0.9;
/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl Operator for State {
    fn metrics_text(&self) -> String {
        let spool = &self.pipeline.spool;
        let (receive_credit, receive_credit_grown) = self.windows.credit();
        self.metrics.encode(&Snapshot {
            spool_bytes: spool.used(),
            spool_records: spool.len(),
            spool_capacity: spool.capacity(),
            vault: self.pipeline.vault.stats(),
            audit_records: self.audit.records_written(),
            audit_unsigned_records: self.audit.chains().unsigned_records(),
            spool_oldest: spool.oldest_age(),
            delivery_retries: self.pipeline.delivery.retries(),
            replica_pending: self.pipeline.delivery.replica_pending(),
            store_errors: quire_pipeline::StoreErrorKind::ALL
                .map(|k| self.pipeline.delivery.errors(k)),
            udp_receive_buffer: self.udp.granted as u64,
            udp_receive_drops: self.udp.drops().unwrap_or(0),
            receive_credit,
            receive_credit_grown,
        })
    }

    fn readiness(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(readiness(self))
    }
}

/// What keeps the server from taking pages now, one line each; empty when ready.
async fn readiness(state: &State) -> Vec<String> {
    let mut problems = Vec::new();
    let meta = state.meta.clone();
    problems.extend(blocking_check("metadata store", move || meta.tenants().map(drop)).await);
    let vault = state.pipeline.vault.clone();
    problems.extend(blocking_check("vault", move || vault.probe()).await);
    let pipeline = &state.pipeline;
    // Replicas hold pages back only where the scanner waits for them (`ack = "replicated"`);
    // otherwise their copies wait in the spool, which the high-water check below watches.
    let replicas = (pipeline.config.ack == quire_pipeline::AckMode::Replicated)
        .then(|| pipeline.replicas.values().flatten())
        .into_iter()
        .flatten();
    let stores = std::iter::once(&pipeline.store)
        .chain(pipeline.routes.values())
        .chain(replicas);
    for store in stores {
        match tokio::time::timeout(CHECK_TIMEOUT, store.exists("quire-readiness-probe")).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("object store {}: {e}", store.name())),
            Err(_) => problems.push(format!(
                "object store {}: no answer within {} s",
                store.name(),
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }
    let spool = &pipeline.spool;
    let capacity = spool.capacity().max(1);
    if spool.used() as f64 > SPOOL_HIGH_WATER * capacity as f64 {
        problems.push(format!(
            "spool: {} of {} bytes in use (over {:.0} %): the object store is not keeping up",
            spool.used(),
            capacity,
            SPOOL_HIGH_WATER * 100.0
        ));
    }
    problems
}

/// Runs a blocking check off the async workers within [`CHECK_TIMEOUT`]; `Some(problem)` if
/// it failed or did not answer.
async fn blocking_check<E: std::fmt::Display + Send + 'static>(
    what: &str,
    check: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> Option<String> {
    match tokio::time::timeout(CHECK_TIMEOUT, tokio::task::spawn_blocking(check)).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(format!("{what}: {e}")),
        Ok(Err(e)) => Some(format!("{what}: {e}")),
        Err(_) => Some(format!(
            "{what}: no answer within {} s",
            CHECK_TIMEOUT.as_secs()
        )),
    }
}
