//! One page through every stage, from the bytes the network stage hands over to the store's
//! confirmation. See the crate docs for the picture.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quire_codecs::sealed::{ChunkCipher, Chunker, Compression, PlainChunk};
use quire_codecs::wire::PageEntry;
use rayon::prelude::*;
use tokio::sync::mpsc;

use crate::compress::{self, Compressor};
use crate::erase;
use crate::hash::{self, PageHasher};
use crate::keys;
use crate::seal::{on_rayon, SealWindow};
use crate::spool::{self, AckMode, Delivery, Record, SpoolError};
use crate::store::{Direct, FromSeal};
use crate::work::{PageFormat, Prior, SealClock, StageTimes};
use crate::{Pipeline, PipelineError};
use quire_storage::StoreError;
use std::time::Instant;

/// What the network stage feeds the pipeline for one page.
#[derive(Debug)]
pub enum PageInput {
    /// The next bytes of the page, in order.
    Data(Bytes),
    /// The sender says the page is complete.
    End,
}

/// Proof that a page is stored: what the scanner is acknowledged with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub entry: PageEntry,
    pub object_key: String,
    /// Size of the sealed object in the store.
    pub stored_bytes: u64,
    /// The page was already stored by an earlier attempt (verified, not written again).
    pub already_stored: bool,
    /// What each stage spent on it (zero for a page already stored).
    pub times: StageTimes,
    /// What its first bytes show, and the compression chosen for it.
    pub format: PageFormat,
    pub compression: Compression,
}

impl Receipt {
    fn new(entry: PageEntry, object_key: String, stored_bytes: u64, already_stored: bool) -> Self {
        Receipt {
            entry,
            object_key,
            stored_bytes,
            already_stored,
            times: StageTimes::default(),
            format: PageFormat::Other,
            compression: Compression::None,
        }
    }

    fn with_work(mut self, times: StageTimes, kind: (Compression, PageFormat)) -> Self {
        self.times = times;
        (self.compression, self.format) = kind;
        self
    }
}

/// The sequential part of a page's processing: hashing, compression and chunking all carry
/// state from one byte to the next. It moves into a rayon task per batch and back.
struct Sequential {
    hasher: PageHasher,
    compressor: Compressor,
    chunker: Chunker,
    times: StageTimes,
}

impl Sequential {
    fn new(compression: Compression, chunk_size: u32) -> Self {
        Sequential {
            hasher: PageHasher::new(),
            compressor: Compressor::new(compression),
            chunker: Chunker::new(chunk_size),
            times: StageTimes::default(),
        }
    }

    fn absorb(&mut self, batch: Vec<Bytes>) -> Vec<PlainChunk> {
        let mut out = Vec::new();
        for data in batch {
            let start = Instant::now();
            self.hasher.update(&data);
            let hashed = Instant::now();
            let packed = self.compressor.push(&data);
            out.extend(self.chunker.push(&packed));
            self.times.hash += hashed - start;
            self.times.compress += hashed.elapsed();
            drop(packed);
            erase::wipe_bytes(data);
        }
        out
    }

    fn finish(self) -> ([u8; 32], u64, Vec<PlainChunk>, StageTimes) {
        let start = Instant::now();
        let (digest, len) = self.hasher.finish();
        let hashed = Instant::now();
        let mut chunker = self.chunker;
        let mut out = chunker.push(&self.compressor.finish());
        out.push(chunker.finish());
        let mut times = self.times;
        times.hash += hashed - start;
        times.compress += hashed.elapsed();
        (digest, len, out, times)
    }
}

/// Wipes received plaintext that will not be processed.
fn wipe_all(parts: Vec<Bytes>) {
    for p in parts {
        erase::wipe_bytes(p);
    }
}

/// The compression for a page, chosen from a sample of its first bytes (wiped after use),
/// and the format the sample shows.
fn choose_compression(first: &[Bytes]) -> (Compression, PageFormat) {
    let mut sample = Vec::with_capacity(compress::SAMPLE_LEN);
    for part in first {
        let want = compress::SAMPLE_LEN - sample.len();
        sample.extend_from_slice(&part[..want.min(part.len())]);
    }
    let compression = compress::choose(&sample);
    let format = PageFormat::detect(&sample);
    erase::wipe_vec(sample);
    (compression, format)
}

/// Hash, compress and seal a whole page held in memory, on the calling (rayon) thread.
/// Fails, having wiped the plaintext, if the page is not the one the scanner declared.
fn seal_whole_page(
    kek: &quire_codecs::sealed::SecretKey,
    kek_ref: quire_codecs::sealed::KekRef,
    object_key: &str,
    chunk_size: u32,
    parts: Vec<Bytes>,
    declared: [u8; 32],
) -> Result<(Bytes, StageTimes, (Compression, PageFormat)), PipelineError> {
    let kind = choose_compression(&parts);
    let (header, cipher) = ChunkCipher::create(kek, kek_ref, object_key, kind.0, chunk_size);
    let mut seq = Sequential::new(kind.0, chunk_size);
    let mut chunks = seq.absorb(parts);
    let (digest, _, tail, mut times) = seq.finish();
    chunks.extend(tail);
    if let Err(e) = hash::check_digest(declared, digest) {
        chunks.into_iter().for_each(|c| erase::wipe_vec(c.data));
        return Err(e);
    }
    // Chunks are independent: an idle rayon worker takes some; a busy one leaves them here.
    let sealing = SealClock::default();
    chunks.par_iter_mut().for_each(|c| {
        let start = Instant::now();
        cipher.seal_chunk(c.index, c.last, &mut c.data);
        sealing.add(start.elapsed());
    });
    times.seal = sealing.total();
    let body: usize = chunks.iter().map(|c| c.data.len()).sum();
    let mut out = BytesMut::with_capacity(header.encoded().len() + body);
    out.extend_from_slice(header.encoded());
    for c in chunks {
        out.extend_from_slice(&c.data);
    }
    Ok((out.freeze(), times, kind))
}

/// Most page bytes gathered into one rayon task; amortises the hand-off for small network reads.
const BATCH_BYTES: usize = 1024 * 1024;

impl Pipeline {
    /// Runs one page through hash, compress, seal and spool, and returns when the scanner may
    /// be told it is stored: once the store confirmed it (`ack = "stored"`), or once it is in
    /// the spool (`ack = "spooled"`). On any error nothing is visible at the page's key.
    ///
    /// If the key already holds an object (a retry after a lost acknowledgement, or a crash
    /// between store and acknowledgement) or a spool record, that is checked against the
    /// declared digest instead of being written again: same content is success, different is
    /// a conflict. The input is then not read, and the caller should stop the stream.
    pub async fn ingest_page(
        &self,
        tenant: &str,
        job_id: &str,
        entry: PageEntry,
        input: mpsc::Receiver<PageInput>,
    ) -> Result<Receipt, PipelineError> {
        self.ingest_page_after(Prior::Unknown, tenant, job_id, entry, input)
            .await
    }

    /// [`Pipeline::ingest_page`] for a caller that knows from its records whether the page
    /// was stored before (see [`Prior`]).
    pub async fn ingest_page_after(
        &self,
        prior: Prior,
        tenant: &str,
        job_id: &str,
        entry: PageEntry,
        mut input: mpsc::Receiver<PageInput>,
    ) -> Result<Receipt, PipelineError> {
        if entry.size > self.config.max_page_size {
            return Err(PipelineError::TooLarge {
                size: entry.size,
                limit: self.config.max_page_size,
            });
        }
        let key = keys::page_key(tenant, job_id, entry.index);
        if let Some(record) = self.spool.pending(&key) {
            let stored_bytes = self.same_or_conflict(&record, &entry).await?;
            return Ok(Receipt::new(entry, key, stored_bytes, true));
        }
        let small =
            self.config.ack != AckMode::Spooled && entry.size <= self.config.single_put_limit;
        let unchecked = prior == Prior::NotRecorded && small;
        if !unchecked && self.stored_already(tenant, &key).await? {
            return self.verify_existing(tenant, entry, key).await;
        }
        // Room in the spool first: while there is none, the page is not read, and QUIC flow
        // control holds the scanner back; after `busy_wait` it is refused as busy.
        let reservation = self
            .spool
            .reserve(tenant, spool::reservation_for(entry.size))
            .await?;
        // Small pages wait for the store in memory when the budget has room (`ack = "stored"`).
        let in_memory = small
            .then(|| self.spool.try_reserve_memory(reservation.bytes()))
            .flatten();
        // Only the small path's conditional write finds an object left unrecorded: a page
        // that goes the streamed way after all is checked now.
        if unchecked && in_memory.is_none() && self.stored_already(tenant, &key).await? {
            return self.verify_existing(tenant, entry, key).await;
        }
        let active = self
            .active
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        if let Some(memory) = in_memory {
            return self
                .ingest_small(tenant, key, entry, input, reservation, memory, active)
                .await;
        }

        // Streamed: a page too large to wait in memory, any page under `ack = "spooled"`, or
        // any page while the memory budget is spent goes through a spool record chunk by chunk.
        // Gather a sample to choose the compression, then start the spool stage.
        let mut first: Vec<Bytes> = Vec::new();
        let mut sampled = 0usize;
        let mut ended = false;
        while sampled < compress::SAMPLE_LEN && (sampled as u64) < entry.size {
            match input.recv().await {
                Some(PageInput::Data(b)) => {
                    sampled += b.len();
                    first.push(b);
                }
                Some(PageInput::End) => {
                    ended = true;
                    break;
                }
                None => return Err(PipelineError::Abandoned),
            }
        }
        let kind = choose_compression(&first);
        let compression = kind.0;

        let (kek_ref, kek) = self.current_key(tenant).await?;
        let (header, cipher) =
            ChunkCipher::create(&kek, kek_ref, &key, compression, self.config.chunk_size);
        drop(kek);
        let target = StageTarget {
            spool: self.spool.clone(),
            key: key.clone(),
            plain_sha256: entry.sha256,
            plain_size: entry.size,
        };
        let (to_spool, spool_rx) = mpsc::channel(self.config.seal_window);
        let writer =
            tokio::task::spawn_blocking(move || stage_object(target, reservation, spool_rx));
        let outcome = self
            .run_stages(
                &entry,
                header.encoded(),
                cipher,
                compression,
                first,
                ended,
                &mut input,
                &to_spool,
            )
            .await;
        if outcome.is_ok() {
            let _ = to_spool.send(FromSeal::Commit).await;
        }
        drop(to_spool);
        let written = writer.await.expect("spool stage panicked");
        drop(active);
        let (record, mut times) = match (outcome, written) {
            // The stages stopped because the spool writer failed (a full disk, say): its
            // error is the cause, not the scanner.
            (Err(PipelineError::Abandoned), Err(e)) => return Err(e.into()),
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => return Err(e.into()),
            (Ok(_), Ok(None)) => return Err(PipelineError::Abandoned),
            (Ok(mut times), Ok(Some((record, spooling)))) => {
                times.spool = spooling;
                (record, times)
            }
        };
        // A concurrent upload of the same page may have spooled first; commit then handed
        // back that record instead.
        let storing = Instant::now();
        let stored_bytes = self.same_or_conflict(&record, &entry).await?;
        times.store = storing.elapsed();
        Ok(Receipt::new(entry, key, stored_bytes, false).with_work(times, kind))
    }

    /// A page small enough to wait for the store in memory (`ack = "stored"`, at most
    /// `single_put_limit`): gathered whole, then hashed, compressed and sealed in one rayon
    /// task and written to the store in one request. Three hand-offs between threads per
    /// page instead of one per network read and per chunk, which is what small pages spent
    /// their time on (see docs/PERFORMANCE.md).
    #[allow(clippy::too_many_arguments)]
    async fn ingest_small(
        &self,
        tenant: &str,
        key: String,
        entry: PageEntry,
        mut input: mpsc::Receiver<PageInput>,
        reservation: spool::Reservation,
        memory: spool::MemoryReservation,
        active: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Receipt, PipelineError> {
        let mut parts = Vec::new();
        let mut received = 0u64;
        loop {
            match input.recv().await {
                Some(PageInput::Data(b)) => {
                    received += b.len() as u64;
                    if received > entry.size {
                        wipe_all(parts);
                        return Err(PipelineError::Oversized {
                            declared: entry.size,
                        });
                    }
                    parts.push(b);
                }
                Some(PageInput::End) => break,
                None => {
                    wipe_all(parts);
                    return Err(PipelineError::Abandoned);
                }
            }
        }
        if let Err(e) = hash::check_length(entry.size, received) {
            wipe_all(parts);
            return Err(e);
        }
        let (kek_ref, kek) = self.current_key(tenant).await?;
        let chunk_size = self.config.chunk_size;
        let object_key = key.clone();
        let declared = entry.sha256;
        let (sealed, mut times, kind) = on_rayon(move || {
            seal_whole_page(&kek, kek_ref, &object_key, chunk_size, parts, declared)
        })
        .await?;
        drop(active);
        let storing = Instant::now();
        let outcome = self
            .put_direct(tenant, &key, &entry, sealed, reservation)
            .await?;
        drop(memory);
        let stored_bytes = match outcome {
            Direct::Stored(stored_bytes) => stored_bytes,
            Direct::Exists => return self.verify_existing(tenant, entry, key).await,
            Direct::Spilled(record) => self.same_or_conflict(&record, &entry).await?,
        };
        times.store = storing.elapsed();
        Ok(Receipt::new(entry, key, stored_bytes, false).with_work(times, kind))
    }

    /// `record` is the spooled copy of the object `entry` describes: waits for the
    /// acknowledgement the configured mode asks for. A record with other content is a conflict.
    async fn same_or_conflict(
        &self,
        record: &Record,
        entry: &PageEntry,
    ) -> Result<u64, PipelineError> {
        if record.meta.plain_sha256 != hex::encode(entry.sha256)
            || record.meta.plain_size != entry.size
        {
            return Err(PipelineError::Conflict { index: entry.index });
        }
        self.await_ack(record).await
    }

    /// Waits for what `ack` promises. Returns the object's sealed size.
    async fn await_ack(&self, record: &Record) -> Result<u64, PipelineError> {
        if self.config.ack == AckMode::Spooled {
            return Ok(record.meta.sealed_size);
        }
        let mut status = record.watch();
        let deadline = tokio::time::Instant::now() + self.config.ack_timeout;
        let primary_is_enough = self.config.ack == AckMode::Stored;
        loop {
            let last_error = match &*status.borrow_and_update() {
                Delivery::Stored { stored_bytes } => return Ok(*stored_bytes),
                Delivery::Replicating { stored_bytes } if primary_is_enough => {
                    return Ok(*stored_bytes)
                }
                Delivery::Replicating { .. } => Some("a replica has not confirmed yet".into()),
                Delivery::Failed(why) => return Err(PipelineError::Undeliverable(why.clone())),
                Delivery::Retrying(why) => Some(why.clone()),
                Delivery::Queued => None,
            };
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(PipelineError::Undeliverable("spool closed".into())),
                Err(_) => {
                    let store = match &*status.borrow() {
                        Delivery::Replicating { .. } => self
                            .replicas_for(&record.meta.tenant)
                            .iter()
                            .map(|s| s.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        _ => self.store_for(&record.meta.tenant).name().to_string(),
                    };
                    return Err(PipelineError::Store(StoreError::Unavailable {
                        store,
                        message: format!(
                            "no confirmation within {:?}{}; the object is spooled and will be \
                             stored when the store answers, retry to confirm",
                            self.config.ack_timeout,
                            last_error
                                .map(|e| format!(" (last error: {e})"))
                                .unwrap_or_default()
                        ),
                    }));
                }
            }
        }
    }

    /// Spools a whole small sealed object (manifests under `ack = "spooled"`).
    async fn spool_whole(
        &self,
        tenant: &str,
        key: &str,
        plain_sha256: [u8; 32],
        plain_size: u64,
        sealed: Bytes,
    ) -> Result<Arc<Record>, PipelineError> {
        let reservation = self
            .spool
            .reserve(tenant, spool::reservation_for(plain_size))
            .await?;
        self.spool_sealed(reservation, key, plain_sha256, plain_size, sealed)
            .await
    }

    /// Writes a whole sealed object held in memory into a committed spool record, under the
    /// room already reserved for it.
    pub(crate) async fn spool_sealed(
        &self,
        reservation: spool::Reservation,
        key: &str,
        plain_sha256: [u8; 32],
        plain_size: u64,
        sealed: Bytes,
    ) -> Result<Arc<Record>, PipelineError> {
        let mut writer = self
            .spool
            .writer(reservation, key, plain_sha256, plain_size)?;
        let record = tokio::task::spawn_blocking(move || {
            writer.write(&sealed)?;
            writer.commit()
        })
        .await
        .expect("spool writer panicked")?;
        Ok(record)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_stages(
        &self,
        entry: &PageEntry,
        header: &[u8],
        cipher: ChunkCipher,
        compression: Compression,
        first: Vec<Bytes>,
        mut ended: bool,
        input: &mut mpsc::Receiver<PageInput>,
        to_spool: &mpsc::Sender<FromSeal>,
    ) -> Result<StageTimes, PipelineError> {
        let send = |b: Bytes| async move {
            to_spool
                .send(FromSeal::Sealed(b))
                .await
                .map_err(|_| PipelineError::Abandoned)
        };
        send(Bytes::copy_from_slice(header)).await?;

        let mut seq = Some(Sequential::new(compression, cipher.chunk_size() as u32));
        let mut window = SealWindow::new(Arc::new(cipher), self.config.seal_window);
        let mut received: u64 = first.iter().map(|b| b.len() as u64).sum();
        let mut batch = first;
        loop {
            if received > entry.size {
                return Err(PipelineError::Oversized {
                    declared: entry.size,
                });
            }
            // Take whatever else is already queued, up to a batch, without waiting.
            let mut batch_len: usize = batch.iter().map(|b| b.len()).sum();
            while !ended && batch_len < BATCH_BYTES {
                match input.try_recv() {
                    Ok(PageInput::Data(b)) => {
                        received += b.len() as u64;
                        batch_len += b.len();
                        batch.push(b);
                    }
                    Ok(PageInput::End) => ended = true,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Err(PipelineError::Abandoned)
                    }
                }
            }
            if received > entry.size {
                return Err(PipelineError::Oversized {
                    declared: entry.size,
                });
            }
            if !batch.is_empty() {
                let mut s = seq.take().expect("sequential state present");
                let b = std::mem::take(&mut batch);
                let (s, chunks) = on_rayon(move || {
                    let c = s.absorb(b);
                    (s, c)
                })
                .await;
                seq = Some(s);
                for c in chunks {
                    if !window.has_room() {
                        send(window.next_sealed().await.expect("window non-empty")).await?;
                    }
                    window.submit(c);
                }
            }
            if ended {
                break;
            }
            match input.recv().await {
                Some(PageInput::Data(b)) => {
                    received += b.len() as u64;
                    batch.push(b);
                }
                Some(PageInput::End) => ended = true,
                None => return Err(PipelineError::Abandoned),
            }
        }
        hash::check_length(entry.size, received)?;
        let s = seq.take().expect("sequential state present");
        let (digest, len, tail, mut times) = on_rayon(move || s.finish()).await;
        debug_assert_eq!(len, received);
        hash::check_digest(entry.sha256, digest)?;
        for c in tail {
            if !window.has_room() {
                send(window.next_sealed().await.expect("window non-empty")).await?;
            }
            window.submit(c);
        }
        while let Some(b) = window.next_sealed().await {
            send(b).await?;
        }
        times.seal = window.seal_time();
        Ok(times)
    }

    async fn verify_existing(
        &self,
        tenant: &str,
        entry: PageEntry,
        key: String,
    ) -> Result<Receipt, PipelineError> {
        let (tx, mut rx) = mpsc::channel(4);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let read = self.read_object(tenant, &key, tx).await;
        let _ = drain.await;
        match read {
            Ok((digest, size)) if digest == entry.sha256 && size == entry.size => {
                let stored_bytes = self.store_for(tenant).size(&key).await?.unwrap_or(0);
                Ok(Receipt::new(entry, key, stored_bytes, true))
            }
            Ok(_) => Err(PipelineError::Conflict { index: entry.index }),
            Err(e) => Err(e),
        }
    }
}

struct StageTarget {
    spool: Arc<spool::Spool>,
    key: String,
    plain_sha256: [u8; 32],
    plain_size: u64,
}

/// The spool stage for a streamed page: sealed bytes from the seal stage go into a spool
/// record, committed (and queued for the store) only on `Commit`. Blocking file I/O.
/// Returns the record and the time spent writing it.
fn stage_object(
    t: StageTarget,
    reservation: spool::Reservation,
    mut rx: mpsc::Receiver<FromSeal>,
) -> Result<Option<(Arc<Record>, std::time::Duration)>, SpoolError> {
    let mut writer = t
        .spool
        .writer(reservation, &t.key, t.plain_sha256, t.plain_size)?;
    let mut spent = std::time::Duration::ZERO;
    while let Some(msg) = rx.blocking_recv() {
        let start = Instant::now();
        match msg {
            FromSeal::Sealed(b) => writer.write(&b)?,
            FromSeal::Commit => {
                let record = writer.commit()?;
                return Ok(Some((record, spent + start.elapsed())));
            }
        }
        spent += start.elapsed();
    }
    Ok(None) // dropped uncommitted: the writer erases what it wrote
}

mod manifest;
#[cfg(test)]
mod tests;
