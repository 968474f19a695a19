//! The raw quinn bulk-transfer ceiling of this machine (see `quire_benches::transport`):
//! 64 MiB per iteration over one connection, on 1 and 4 streams.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quire_benches::transport::Pair;

const TOTAL: u64 = 64 * 1024 * 1024;

fn bench_transport(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pair = rt.block_on(Pair::start()).unwrap();
    let mut g = c.benchmark_group("quinn_bulk_upload");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(TOTAL));
    for streams in [1u32, 4] {
        g.bench_function(format!("{streams}_streams_64MiB"), |b| {
            b.iter(|| rt.block_on(pair.upload(TOTAL, streams)).unwrap())
        });
    }
    g.finish();
    rt.block_on(pair.close());
}

criterion_group!(benches, bench_transport);
criterion_main!(benches);
