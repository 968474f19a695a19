//! What an operator watches: counters, gauges and histograms in Prometheus's text format,
//! served with `/healthz` and `/readyz` on a listener of their own (`[metrics] listen`, off the
//! QUIC port; see `http.rs`). The families are the `prometheus` crate's, written in the
//! Prometheus text format (0.0.4, what `promtool check metrics` reads); their names and
//! meaning are listed in docs/OPERATIONS.md.
//!
//! Tenant labels are bounded: the first [`MAX_TENANT_LABELS`] tenants seen get their own
//! series, later ones share `_other`, so a service with many tenants cannot blow up the
//! scrape.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use quire_codecs::wire::ErrorCode;

pub(crate) mod http;

/// The stages of `quire_stage_seconds`, in the order a page meets them.
pub const STAGES: [&str; 7] = [
    "authenticate",
    "hash",
    "compress",
    "seal",
    "spool",
    "store",
    "ack",
];

/// Tenants with series of their own; the rest are counted under `_other`.
pub const MAX_TENANT_LABELS: usize = 100;

/// What is read, not counted: the state of the spool and the vault's own counters at the
/// moment of a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub spool_bytes: u64,
    pub spool_records: usize,
    pub spool_capacity: u64,
    pub vault: quire_pipeline::vault::VaultStats,
    /// Audit records written since start, by any part of the server.
    pub audit_records: u64,
    /// The most records of one audit chain that no checkpoint covers yet.
    pub audit_unsigned_records: u64,
    /// How long the oldest spooled object has waited for the store.
    pub spool_oldest: Duration,
    /// Delivery attempts repeated after a failure, since start.
    pub delivery_retries: u64,
    /// Store write failures by kind (`StoreErrorKind::ALL` order), since start.
    pub store_errors: [u64; 4],
    /// Objects in their primary store whose replica copies are still on their way.
    pub replica_pending: u64,
    /// The QUIC socket's receive buffer as the kernel granted it, in bytes.
    pub udp_receive_buffer: u64,
    /// Datagrams the kernel dropped because that buffer was full, since start.
    pub udp_receive_drops: u64,
    /// Page bytes connections may send that the pipeline has not read (their windows and
    /// the credit granted under larger ones), and the part of it grown beyond the shares.
    pub receive_credit: u64,
    pub receive_credit_grown: u64,
}

/// What the operator's listener asks of the server (implemented by its shared state in
/// `readiness.rs`, so that this module needs nothing of the server's).
pub trait Operator: Send + Sync + 'static {
    /// `/metrics`.
    fn metrics_text(&self) -> String;
    /// `/readyz`: what keeps the server from taking pages now, one line each.
    fn readiness(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<String>> + Send + '_>>;
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    tenants: Mutex<HashSet<String>>,
    pages: IntCounterVec,
    page_bytes: IntCounterVec,
    stored_bytes: IntCounterVec,
    page_seconds: Histogram,
    /// `quire_stage_seconds` by stage, looked up once ([`STAGES`] order).
    stage_seconds: [Histogram; 7],
    pages_by_format: IntCounterVec,
    refusals: IntCounterVec,
    auth_failures: IntCounter,
    connections: IntGauge,
    authenticating: IntGauge,
    audit_records: IntCounter,
    audit_unsigned: IntGauge,
    /// Checkpoints by outcome: written, failed (store or vault), conflict (tampering).
    audit_checkpoints: IntCounterVec,
    spool_bytes: IntGauge,
    spool_records: IntGauge,
    spool_capacity: IntGauge,
    spool_oldest: prometheus::Gauge,
    replica_pending: IntGauge,
    delivery_retries: IntCounter,
    store_errors: IntCounterVec,
    key_cache_hits: IntCounter,
    vault_unwraps: IntCounter,
    udp_receive_buffer: IntGauge,
    udp_receive_drops: IntCounter,
    receive_credit: IntGauge,
    receive_credit_grown: IntGauge,
    /// The cumulative counts read at the last scrape, of which each scrape adds the growth.
    seen: Mutex<Snapshot>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` and hands it back (names and help are static: a failure is a bug).
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

/// From a page's first frame to its acknowledgement.
fn page_histogram(r: &Registry) -> Histogram {
    register(
        r,
        Histogram::with_opts(
            HistogramOpts::new(
                "quire_page_seconds",
                "From a page's first frame to its acknowledgement (hash, compress, seal, spool, store)",
            )
            // 1 ms .. ~33 s
            .buckets(exponential_buckets(0.001, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric"),
    )
}

/// Time per page in each stage.
fn stage_histogram(r: &Registry) -> HistogramVec {
    register(
        r,
        HistogramVec::new(
            HistogramOpts::new(
                "quire_stage_seconds",
                "Time per page in each stage: authenticate (per connection), hash, compress, seal (work on the page's bytes, seal summed over threads), spool, store (to the store's confirmation), ack (first frame to acknowledgement)",
            )
            // 10 µs .. ~20 s
            .buckets(exponential_buckets(0.00001, 2.6, 16).expect("valid buckets")),
            &["stage"],
        )
        .expect("valid metric"),
    )
}

impl Metrics {
    /// The families, registered under `quire_`.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let page_seconds = page_histogram(&r);
        let stage_seconds = stage_histogram(&r);
        Metrics {
            stage_seconds: STAGES.map(|stage| stage_seconds.with_label_values(&[stage])),
            pages_by_format: counter_vec(
                &r,
                "quire_pages_by_format_total",
                "Pages newly stored, by the format their first bytes show and the compression chosen for them",
                &["format", "compression"],
            ),
            spool_oldest: register(
                &r,
                prometheus::Gauge::new(
                    "quire_spool_oldest_seconds",
                    "How long the oldest spooled object has waited for the object store",
                )
                .expect("valid metric"),
            ),
            replica_pending: gauge(
                &r,
                "quire_replica_pending_objects",
                "Objects stored in their primary store whose copies to the tenant's replicas are still on their way",
            ),
            delivery_retries: counter(
                &r,
                "quire_delivery_retries_total",
                "Spooled objects whose write to the store failed and is retried",
            ),
            store_errors: counter_vec(
                &r,
                "quire_store_errors_total",
                "Failed writes to the object store, by kind: unavailable and timeout (retried), rejected (for good), damaged (the spooled copy did not read back intact)",
                &["kind"],
            ),
            pages: counter_vec(
                &r,
                "quire_pages_total",
                "Pages acknowledged to scanners, by tenant and whether they were new or already stored",
                &["tenant", "outcome"],
            ),
            page_bytes: counter_vec(
                &r,
                "quire_page_bytes_total",
                "Plaintext bytes of the pages acknowledged, by tenant",
                &["tenant"],
            ),
            stored_bytes: counter_vec(
                &r,
                "quire_stored_bytes_total",
                "Sealed bytes written to the object store for newly stored pages, by tenant",
                &["tenant"],
            ),
            page_seconds,
            refusals: counter_vec(
                &r,
                "quire_refusals_total",
                "Requests refused, by the error code the client was sent",
                &["reason"],
            ),
            auth_failures: counter(
                &r,
                "quire_auth_failures_total",
                "Connections refused at authentication (unknown device, wrong secret, disabled, no hello)",
            ),
            connections: gauge(&r, "quire_connections", "Authenticated connections open"),
            authenticating: gauge(
                &r,
                "quire_connections_authenticating",
                "Connections accepted and not yet authenticated (bounded by the pre-authentication gate)",
            ),
            audit_records: counter(&r, "quire_audit_records_total", "Audit records written"),
            audit_unsigned: gauge(
                &r,
                "quire_audit_unsigned_records",
                "Checkpoint lag: the most records of one tenant's audit chain not yet covered by a signed checkpoint",
            ),
            audit_checkpoints: counter_vec(
                &r,
                "quire_audit_checkpoints_total",
                "Audit checkpoints by outcome: written; failed (store or vault unavailable, retried); conflict (the log disagrees with a signed checkpoint: tampering)",
                &["outcome"],
            ),
            spool_bytes: gauge(
                &r,
                "quire_spool_bytes",
                "Bytes in the spool waiting for the object store",
            ),
            spool_records: gauge(
                &r,
                "quire_spool_records",
                "Sealed objects in the spool waiting for the object store",
            ),
            spool_capacity: gauge(
                &r,
                "quire_spool_capacity_bytes",
                "The spool's capacity ([spool] capacity)",
            ),
            key_cache_hits: counter(
                &r,
                "quire_key_cache_hits_total",
                "Tenant key lookups answered from memory",
            ),
            vault_unwraps: counter(
                &r,
                "quire_vault_unwraps_total",
                "Unwrap calls to the vault backend (file, KMS or HSM)",
            ),
            udp_receive_buffer: gauge(
                &r,
                "quire_udp_receive_buffer_bytes",
                "The QUIC socket's receive buffer as the kernel granted it (net.core.rmem_max caps it)",
            ),
            udp_receive_drops: counter(
                &r,
                "quire_udp_receive_drops_total",
                "Datagrams the kernel dropped because the QUIC socket's receive buffer was full: scanners take them for network loss and slow down",
            ),
            receive_credit: gauge(
                &r,
                "quire_receive_credit_bytes",
                "Page bytes connected scanners may send that the pipeline has not read yet: the most the server can be made to buffer",
            ),
            receive_credit_grown: gauge(
                &r,
                "quire_receive_credit_grown_bytes",
                "The part of quire_receive_credit_bytes granted beyond each connection's share of the budget, to scanners whose link needs a larger window",
            ),
            registry: r,
            tenants: Mutex::new(HashSet::new()),
            seen: Mutex::new(Default::default()),
        }
    }

    /// The tenant's label: its own name while there is room, else `_other`.
    fn tenant(&self, tenant: &str) -> String {
        let mut seen = self.tenants.lock().expect("metrics lock");
        if seen.contains(tenant) {
            return tenant.to_string();
        }
        if seen.len() < MAX_TENANT_LABELS {
            seen.insert(tenant.to_string());
            return tenant.to_string();
        }
        "_other".to_string()
    }

    /// A page was acknowledged `took` after its first frame.
    pub fn page_stored(&self, tenant: &str, receipt: &quire_pipeline::Receipt, took: Duration) {
        let tenant = self.tenant(tenant);
        let again = receipt.already_stored;
        let outcome = if again { "duplicate" } else { "stored" };
        self.pages.with_label_values(&[&tenant, outcome]).inc();
        self.page_bytes
            .with_label_values(&[&tenant])
            .inc_by(receipt.entry.size);
        self.page_seconds.observe(took.as_secs_f64());
        self.stage("ack", took);
        if again {
            return;
        }
        self.stored_bytes
            .with_label_values(&[&tenant])
            .inc_by(receipt.stored_bytes);
        let t = receipt.times;
        for (i, spent) in [t.hash, t.compress, t.seal, t.spool, t.store]
            .into_iter()
            .enumerate()
        {
            self.stage_seconds[i + 1].observe(spent.as_secs_f64());
        }
        let compression = match receipt.compression {
            quire_codecs::sealed::Compression::None => "none",
            quire_codecs::sealed::Compression::Zstd => "zstd",
        };
        self.pages_by_format
            .with_label_values(&[receipt.format.as_str(), compression])
            .inc();
    }

    /// Time spent in `stage` (one of [`STAGES`]; `authenticate` for a connection's login).
    pub fn stage(&self, stage: &str, spent: Duration) {
        if let Some(i) = STAGES.iter().position(|s| *s == stage) {
            self.stage_seconds[i].observe(spent.as_secs_f64());
        }
    }

    /// A request was refused with `code`.
    pub fn refused(&self, code: ErrorCode) {
        let reason = format!("{code:?}").to_lowercase();
        self.refusals.with_label_values(&[&reason]).inc();
    }

    /// A connection failed to authenticate.
    pub fn auth_failed(&self) {
        self.auth_failures.inc();
    }

    /// An audit checkpoint was written, `failed`, or found a `conflict`.
    pub fn audit_checkpoint(&self, outcome: &str) {
        self.audit_checkpoints.with_label_values(&[outcome]).inc();
    }

    /// An authenticated connection opened (`+1`) or closed (`-1`).
    pub fn connection(&self, delta: i64) {
        self.connections.add(delta);
    }

    /// A connection began (`+1`) or ended (`-1`) its authentication.
    pub fn authenticating(&self, delta: i64) {
        self.authenticating.add(delta);
    }

    /// The text exposition, with the gauges set from `now` first.
    pub fn encode(&self, now: &Snapshot) -> String {
        self.spool_bytes.set(now.spool_bytes as i64);
        self.spool_records.set(now.spool_records as i64);
        self.spool_capacity.set(now.spool_capacity as i64);
        self.audit_unsigned.set(now.audit_unsigned_records as i64);
        self.spool_oldest.set(now.spool_oldest.as_secs_f64());
        self.replica_pending.set(now.replica_pending as i64);
        self.udp_receive_buffer.set(now.udp_receive_buffer as i64);
        self.receive_credit.set(now.receive_credit as i64);
        self.receive_credit_grown
            .set(now.receive_credit_grown as i64);
        {
            let mut seen = self.seen.lock().expect("metrics lock");
            let grown = |now: u64, before: u64| now.saturating_sub(before);
            self.key_cache_hits
                .inc_by(grown(now.vault.cache_hits, seen.vault.cache_hits));
            self.vault_unwraps
                .inc_by(grown(now.vault.backend_unwraps, seen.vault.backend_unwraps));
            self.audit_records
                .inc_by(grown(now.audit_records, seen.audit_records));
            self.delivery_retries
                .inc_by(grown(now.delivery_retries, seen.delivery_retries));
            self.udp_receive_drops
                .inc_by(grown(now.udp_receive_drops, seen.udp_receive_drops));
            for (i, kind) in quire_pipeline::StoreErrorKind::ALL.iter().enumerate() {
                self.store_errors
                    .with_label_values(&[kind.as_str()])
                    .inc_by(grown(now.store_errors[i], seen.store_errors[i]));
            }
            *seen = *now;
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing to memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
