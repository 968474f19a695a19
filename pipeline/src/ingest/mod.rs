//! One page through every stage, from the bytes the network stage hands over to the store's
//! confirmation. See the crate docs for the picture.

use std::sync::Arc;

use bytes::Bytes;
use quire_codecs::sealed::{ChunkCipher, Compression};
use quire_codecs::wire::PageEntry;
use tokio::sync::mpsc;

use crate::compress;
use crate::hash;
use crate::keys;
use crate::seal::{on_rayon, SealWindow};
use crate::spool::{self, AckMode, Delivery, Record, SpoolError};
use crate::store::{Direct, FromSeal};
use crate::work::{PageFormat, Prior, StageTimes};
use crate::{Pipeline, PipelineError};
use quire_storage::StoreError;
use std::time::Instant;

/// What the network stage feeds the pipeline for one page.
#[derive(Debug)]
pub enum PageInput {
    /// The next bytes of the page, in order.
    Data(Bytes),
    /// The sender says the page is complete; with the page's SHA-256 when the sender
    /// declares it after the bytes ([`DigestAt::End`]).
    End(Option<[u8; 32]>),
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
        self.ingest_page_after(
            (Prior::Unknown, DigestAt::Start),
            tenant,
            job_id,
            entry,
            input,
        )
        .await
    }

    /// [`Pipeline::ingest_page`] for a caller that knows from its records whether the page
    /// was stored before (see [`Prior`]), and whose scanner may declare the page's SHA-256
    /// after its bytes ([`DigestAt::End`], in [`PageInput::End`]; `entry.sha256` is then not
    /// read). Such a page already stored is received whole and hashed before it is compared,
    /// since only its end says which page it is.
    pub async fn ingest_page_after(
        &self,
        (prior, at): (Prior, DigestAt),
        tenant: &str,
        job_id: &str,
        mut entry: PageEntry,
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
            entry.sha256 = digest_to_compare(&entry, at, &mut input).await?;
            let stored_bytes = self.same_or_conflict(&record, &entry).await?;
            return Ok(Receipt::new(entry, key, stored_bytes, true));
        }
        let small =
            self.config.ack != AckMode::Spooled && entry.size <= self.config.single_put_limit;
        let unchecked = prior == Prior::NotRecorded && small;
        if !unchecked && self.stored_already(tenant, &key).await? {
            entry.sha256 = digest_to_compare(&entry, at, &mut input).await?;
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
            entry.sha256 = digest_to_compare(&entry, at, &mut input).await?;
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
                .ingest_small(tenant, key, (entry, at), input, reservation, memory, active)
                .await;
        }

        // Streamed: a page too large to wait in memory, any page under `ack = "spooled"`, or
        // any page while the memory budget is spent goes through a spool record chunk by chunk.
        // Gather a sample to choose the compression, then start the spool stage.
        let mut first: Vec<Bytes> = Vec::new();
        let mut sampled = 0usize;
        let mut ended = None;
        while sampled < compress::SAMPLE_LEN && (sampled as u64) < entry.size {
            match input.recv().await {
                Some(PageInput::Data(b)) => {
                    sampled += b.len();
                    first.push(b);
                }
                Some(PageInput::End(after)) => {
                    ended = Some(after);
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
                (&mut entry, at),
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
            let _ = to_spool.send(FromSeal::CommitAs(entry.sha256)).await;
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
        (mut entry, at): (PageEntry, DigestAt),
        mut input: mpsc::Receiver<PageInput>,
        reservation: spool::Reservation,
        memory: spool::MemoryReservation,
        active: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Receipt, PipelineError> {
        let mut parts = Vec::new();
        let mut received = 0u64;
        let after = loop {
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
                Some(PageInput::End(after)) => break after,
                None => {
                    wipe_all(parts);
                    return Err(PipelineError::Abandoned);
                }
            }
        };
        let declared = hash::check_length(entry.size, received)
            .and_then(|()| declared_digest(at, &entry, after));
        let declared = match declared {
            Ok(d) => d,
            Err(e) => {
                wipe_all(parts);
                return Err(e);
            }
        };
        entry.sha256 = declared;
        let (kek_ref, kek) = self.current_key(tenant).await?;
        let chunk_size = self.config.chunk_size;
        let object_key = key.clone();
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
        (entry, at): (&mut PageEntry, DigestAt),
        header: &[u8],
        cipher: ChunkCipher,
        compression: Compression,
        first: Vec<Bytes>,
        mut ended: Option<Option<[u8; 32]>>,
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
            while ended.is_none() && batch_len < BATCH_BYTES {
                match input.try_recv() {
                    Ok(PageInput::Data(b)) => {
                        received += b.len() as u64;
                        batch_len += b.len();
                        batch.push(b);
                    }
                    Ok(PageInput::End(after)) => ended = Some(after),
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
            if ended.is_some() {
                break;
            }
            match input.recv().await {
                Some(PageInput::Data(b)) => {
                    received += b.len() as u64;
                    batch.push(b);
                }
                Some(PageInput::End(after)) => ended = Some(after),
                None => return Err(PipelineError::Abandoned),
            }
        }
        hash::check_length(entry.size, received)?;
        let s = seq.take().expect("sequential state present");
        let (digest, len, tail, mut times) = on_rayon(move || s.finish()).await;
        debug_assert_eq!(len, received);
        let declared = declared_digest(at, entry, ended.flatten())?;
        hash::check_digest(declared, digest)?;
        entry.sha256 = declared;
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
            FromSeal::Commit | FromSeal::CommitAs(_) => {
                if let FromSeal::CommitAs(plain_sha256) = msg {
                    writer.set_plain_sha256(plain_sha256);
                }
                let record = writer.commit()?;
                return Ok(Some((record, spent + start.elapsed())));
            }
        }
        spent += start.elapsed();
    }
    Ok(None) // dropped uncommitted: the writer erases what it wrote
}

mod declared;
mod manifest;
mod whole;

pub use declared::DigestAt;
use declared::{declared_digest, digest_to_compare};
use whole::{choose_compression, seal_whole_page, wipe_all, Sequential};
#[cfg(test)]
mod tests;
