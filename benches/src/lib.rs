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

/// Incompressible bytes.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub mod transport;
