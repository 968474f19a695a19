//! Inputs shared by the benches: page-like buffers of each content kind.

/// A real JPEG page from `samples/`, repeated to `len` bytes (JPEG data does not compress).
pub fn jpeg_like(len: usize) -> Vec<u8> {
    let page = include_bytes!("../../samples/scan-job/04-boxedpage.jpg");
    page.iter().copied().cycle().take(len).collect()
}

/// A clean bilevel bitmap: long runs, compresses very well.
pub fn bitmap_like(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if (i / 97) % 7 == 0 { 0xff } else { 0x00 })
        .collect()
}

/// Incompressible bytes (the same every run).
pub fn noise(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15).fill(&mut out);
    out
}

pub mod transport;

/// Ingests `data` as page 0 of `job` through `pipeline`, fed in 64 KiB frames as the network
/// stage feeds it, then deletes the stored object: a server frees a page's bytes once stored,
/// and a memory store that kept every iteration's object would make each one pay for fresh
/// pages.
pub async fn ingest_and_forget(
    pipeline: &quire_pipeline::Pipeline,
    store: &quire_storage::Store,
    job: &str,
    data: bytes::Bytes,
    sha256: [u8; 32],
) {
    use quire_pipeline::PageInput;
    let entry = quire_codecs::wire::PageEntry {
        index: 0,
        name: "p".into(),
        size: data.len() as u64,
        sha256,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let feed = tokio::spawn(async move {
        let mut rest = data;
        while !rest.is_empty() {
            let part = rest.split_to(rest.len().min(64 * 1024));
            tx.send(PageInput::Data(part)).await.unwrap();
        }
        tx.send(PageInput::End(None)).await.unwrap();
    });
    let receipt = pipeline.ingest_page("bench", job, entry, rx).await.unwrap();
    feed.await.unwrap();
    store.delete(&receipt.object_key).await.unwrap();
}
