//! What the server's metrics cost per page, against what a page costs: `Metrics::page_stored`
//! (a tenant label lookup, counters, the page and six stage histograms, the format counter)
//! beside the in-process ingest of a 1 MiB page measured by the `vault` and `stages` benches
//! (about 1.5 ms); and the clock reads the stage timings add inside the pipeline (three per
//! network read and one per chunk sealed).
//!
//! `cargo bench -p quire-benches --bench metrics`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use quire_codecs::sealed::Compression;
use quire_codecs::wire::PageEntry;
use quire_pipeline::{PageFormat, Receipt, StageTimes};
use quire_server::metrics::Metrics;

fn receipt() -> Receipt {
    Receipt {
        entry: PageEntry {
            index: 0,
            name: "p.tif".into(),
            size: 1 << 20,
            sha256: [0; 32],
        },
        object_key: "tenants/acme/jobs/j/pages/0".into(),
        stored_bytes: 1 << 20,
        already_stored: false,
        times: StageTimes {
            hash: Duration::from_micros(400),
            compress: Duration::from_micros(50),
            seal: Duration::from_micros(100),
            spool: Duration::ZERO,
            store: Duration::from_micros(900),
        },
        format: PageFormat::Tiff,
        compression: Compression::Zstd,
    }
}

fn bench_metrics(c: &mut Criterion) {
    let metrics = Metrics::new();
    let r = receipt();
    let mut g = c.benchmark_group("metrics");
    g.bench_function("page_stored", |b| {
        b.iter(|| metrics.page_stored("acme", &r, Duration::from_micros(1500)))
    });
    // A server past its tenant-label budget: every page of a new tenant goes to `_other`.
    for i in 0..quire_server::metrics::MAX_TENANT_LABELS {
        metrics.page_stored(&format!("t{i}"), &r, Duration::ZERO);
    }
    g.bench_function("page_stored_other_tenant", |b| {
        b.iter(|| metrics.page_stored("late", &r, Duration::from_micros(1500)))
    });
    g.bench_function("clock_read", |b| b.iter(Instant::now));
    g.finish();
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
