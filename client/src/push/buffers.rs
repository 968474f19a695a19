//! Page buffers a connection reuses once the server has acknowledged what they held.
//!
//! A piece of a page file stays in QUIC's send buffer until the server acknowledges it.
//! Freeing it then and allocating the next piece anew made the allocator hand memory back to
//! the kernel and fault it in again, zeroed, for every piece: about a tenth of a pushing
//! scanner's CPU (docs/PERFORMANCE.md). So a piece's buffer goes back to its connection
//! when the last `Bytes` that points into it is dropped, and the next piece is read into it.
//!
//! Buffers come in power-of-two sizes from [`SMALLEST`] to the largest piece, so a small
//! page holds at most twice its size; a connection keeps at most [`KEEP_BYTES`] of idle
//! buffers, and they are freed with it.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// The smallest buffer kept: smaller pieces are allocated exactly, and cheaply.
pub const SMALLEST: usize = 16 * 1024;
/// The largest buffer kept: the size of a piece read from a page file.
pub const LARGEST: usize = 1024 * 1024;
/// Idle buffer bytes one connection keeps: its send window's worth (16 MiB), as much as it
/// can have waiting for acknowledgement.
pub const KEEP_BYTES: usize = 16 * 1024 * 1024;

const CLASSES: usize = (LARGEST / SMALLEST).trailing_zeros() as usize + 1;

/// A connection's idle buffers, by size class.
#[derive(Debug, Default)]
pub struct Buffers {
    idle: Mutex<Idle>,
}

#[derive(Debug, Default)]
struct Idle {
    by_class: [Vec<Vec<u8>>; CLASSES],
    bytes: usize,
}

/// The size class of a piece of `len` bytes: the smallest kept size that holds it.
fn class_of(len: usize) -> Option<usize> {
    let size = len.next_power_of_two();
    (SMALLEST..=LARGEST)
        .contains(&size)
        .then(|| (size / SMALLEST).trailing_zeros() as usize)
}

/// The class of a buffer whose capacity is exactly a kept size (only those go back).
fn class_of_capacity(capacity: usize) -> Option<usize> {
    class_of(capacity).filter(|&c| SMALLEST << c == capacity)
}

impl Buffers {
    /// An empty buffer that holds `len` bytes without growing: an idle one of its class if
    /// there is one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let Some(class) = class_of(len) else {
            return Vec::with_capacity(len);
        };
        let reused = {
            let mut idle = self.idle.lock().expect("buffers lock poisoned");
            let b = idle.by_class[class].pop();
            if let Some(b) = &b {
                idle.bytes -= b.capacity();
            }
            b
        };
        reused.unwrap_or_else(|| Vec::with_capacity(SMALLEST << class))
    }

    /// `buf` as `Bytes` that give the buffer back to `home` when the last of them is
    /// dropped (if the connection is still there).
    pub fn freeze(home: &Arc<Buffers>, buf: Vec<u8>) -> Bytes {
        let Some(class) = class_of_capacity(buf.capacity()) else {
            return Bytes::from(buf);
        };
        Bytes::from_owner(Lent {
            buf,
            class,
            home: Arc::downgrade(home),
        })
    }

    fn give_back(&self, class: usize, mut buf: Vec<u8>) {
        let mut idle = self.idle.lock().expect("buffers lock poisoned");
        if idle.bytes + buf.capacity() > KEEP_BYTES {
            return;
        }
        buf.clear();
        idle.bytes += buf.capacity();
        idle.by_class[class].push(buf);
    }

    /// Bytes held idle now.
    #[cfg(test)]
    pub(crate) fn idle_bytes(&self) -> usize {
        self.idle.lock().expect("buffers lock poisoned").bytes
    }
}

/// A buffer lent out as `Bytes`, going home when dropped.
struct Lent {
    buf: Vec<u8>,
    /// The class of `buf`'s capacity.
    class: usize,
    home: Weak<Buffers>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            home.give_back(self.class, std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(buffers: &Buffers, len: usize) -> Vec<u8> {
        let mut b = buffers.take(len);
        b.extend(std::iter::repeat_n(7u8, len));
        b
    }

    #[test]
    fn a_dropped_piece_lends_its_buffer_to_the_next() {
        let home = Arc::new(Buffers::default());
        let b = filled(&home, 300_000);
        let at = b.as_ptr();
        assert_eq!(b.capacity(), 512 * 1024);
        let bytes = Buffers::freeze(&home, b);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(home.idle_bytes(), 0, "a slice still points into it");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(home.idle_bytes(), 512 * 1024);
        let again = home.take(400_000);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty(), "a reused buffer starts empty");
        assert_eq!(home.idle_bytes(), 0);
        // Another class does not take it.
        let bytes = Buffers::freeze(&home, again);
        drop(bytes);
        let larger = home.take(LARGEST);
        assert_eq!(larger.capacity(), LARGEST);
        assert_eq!(
            home.idle_bytes(),
            512 * 1024,
            "the smaller buffer stays idle"
        );
    }

    #[test]
    fn sizes_outside_the_classes_are_neither_kept_nor_reused() {
        let home = Arc::new(Buffers::default());
        for len in [0, 1, 1000, SMALLEST / 2, LARGEST + 1, 3 * LARGEST] {
            let b = filled(&home, len);
            assert!(b.capacity() >= len);
            drop(Buffers::freeze(&home, b));
            assert_eq!(home.idle_bytes(), 0, "{len}");
        }
        // Nor is a buffer whose capacity is not a class's size.
        let mut b = Vec::with_capacity(SMALLEST + 1);
        b.extend([1u8; 100]);
        drop(Buffers::freeze(&home, b));
        assert_eq!(home.idle_bytes(), 0);
    }

    #[test]
    fn a_connection_keeps_at_most_its_share_idle() {
        let home = Arc::new(Buffers::default());
        let pieces: Vec<Bytes> = (0..KEEP_BYTES / LARGEST + 5)
            .map(|_| Buffers::freeze(&home, filled(&home, LARGEST)))
            .collect();
        drop(pieces);
        assert_eq!(home.idle_bytes(), KEEP_BYTES);
    }

    #[test]
    fn pieces_outliving_their_connection_free_their_buffers() {
        let home = Arc::new(Buffers::default());
        let bytes = Buffers::freeze(&home, filled(&home, LARGEST));
        drop(home);
        assert_eq!(bytes.len(), LARGEST);
        drop(bytes);
    }

    #[test]
    fn every_length_up_to_the_largest_piece_fits_its_buffer_without_growing() {
        let home = Buffers::default();
        for len in [
            1,
            SMALLEST - 1,
            SMALLEST,
            SMALLEST + 1,
            65_536,
            700_000,
            LARGEST,
        ] {
            let b = home.take(len);
            assert!(b.capacity() >= len, "{len}");
            if len >= SMALLEST {
                assert!(b.capacity() < 2 * len, "{len}: at most twice the piece");
            }
        }
    }
}
