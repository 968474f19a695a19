//! Stage 4, seal: AES-256-GCM per chunk under the page's own data key, in parallel on rayon.
//!
//! Chunks are independent (see `quire_codecs::sealed`), so [`SealWindow`] hands each one to
//! rayon as soon as it exists and gives them back in order. The window is bounded: when it is
//! full the caller waits for the oldest chunk, which holds back the network reader and, through
//! QUIC flow control, the scanner.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use quire_codecs::sealed::{ChunkCipher, PlainChunk};
use tokio::sync::oneshot;

/// Runs `f` on the rayon pool and awaits its result without blocking the async runtime.
/// A panic inside `f` is re-raised in the awaiting task rather than aborting the process.
pub async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.await.expect("rayon dropped a task") {
        Ok(t) => t,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Chunks being sealed, oldest first.
#[derive(Debug)]
pub struct SealWindow {
    cipher: Arc<ChunkCipher>,
    pending: VecDeque<oneshot::Receiver<Bytes>>,
    capacity: usize,
    /// Time the seal tasks took, summed (for the stage metrics).
    spent: Arc<crate::work::SealClock>,
}

impl SealWindow {
    pub fn new(cipher: Arc<ChunkCipher>, capacity: usize) -> Self {
        SealWindow {
            cipher,
            pending: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            spent: Arc::default(),
        }
    }

    /// Whether another chunk may be submitted without waiting.
    pub fn has_room(&self) -> bool {
        self.pending.len() < self.capacity
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Starts sealing a chunk. Call only when [`SealWindow::has_room`].
    pub fn submit(&mut self, chunk: PlainChunk) {
        let (tx, rx) = oneshot::channel();
        let (cipher, spent) = (self.cipher.clone(), self.spent.clone());
        rayon::spawn(move || {
            let start = std::time::Instant::now();
            let mut data = chunk.data;
            cipher.seal_chunk(chunk.index, chunk.last, &mut data);
            spent.add(start.elapsed());
            let _ = tx.send(Bytes::from(data));
        });
        self.pending.push_back(rx);
    }

    /// Time the chunks sealed so far took, summed over the threads that sealed them.
    pub fn seal_time(&self) -> std::time::Duration {
        self.spent.total()
    }

    /// The oldest chunk, sealed (waits for it). `None` when nothing is in flight.
    pub async fn next_sealed(&mut self) -> Option<Bytes> {
        let rx = self.pending.pop_front()?;
        Some(rx.await.expect("seal task panicked"))
    }
}
