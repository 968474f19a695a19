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
