//! What the server's metrics cost per page, against what a page costs: `Metrics::page_stored`
//! (a tenant label lookup, three counters and a histogram) beside the in-process ingest of a
//! 1 MiB page measured by the `vault` and `stages` benches (about 1.5 ms).
//!
//! `cargo bench -p quire-benches --bench metrics`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use quire_server::metrics::Metrics;

fn bench_metrics(c: &mut Criterion) {
    let metrics = Metrics::new();
    let mut g = c.benchmark_group("metrics");
    g.bench_function("page_stored", |b| {
        b.iter(|| metrics.page_stored("acme", 1 << 20, 1 << 20, false, Duration::from_micros(1500)))
    });
    // A server past its tenant-label budget: every page of a new tenant goes to `_other`.
    for i in 0..quire_server::metrics::MAX_TENANT_LABELS {
        metrics.page_stored(&format!("t{i}"), 1, 1, false, Duration::ZERO);
    }
    g.bench_function("page_stored_other_tenant", |b| {
        b.iter(|| metrics.page_stored("late", 1 << 20, 1 << 20, false, Duration::from_micros(1500)))
    });
    g.finish();
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
