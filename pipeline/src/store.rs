//! Stage 6, store: sealed objects go from the spool to the object store, visible only once
//! complete, and the spool record is erased once the store confirmed them.
//!
//! Small pages are written in one conditional create; large ones stream up as a multipart
//! upload, so a page larger than memory never sits in memory. Either way nothing appears at
//! the key unless the writer is told to commit, and an upload that is not committed is
//! aborted, leaving nothing behind.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quire_storage::{Store, StoreError, Upload};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

use crate::spool::{self, Delivery, Record};
use crate::work::StoreErrorKind;
use crate::PipelineError;
use quire_codecs::wire::PageEntry;

/// What the seal stage sends the next stage (the spool, or the store directly).
#[derive(Debug)]
pub enum FromSeal {
    /// The next sealed bytes of the object, in order.
    Sealed(Bytes),
    /// Every byte was sent and the page checked out: make the object visible.
    Commit,
    /// As `Commit`, naming the page's SHA-256, which a scanner may declare only after the
    /// bytes (the spool records it).
    CommitAs([u8; 32]),
}

enum Sink {
    Buffer(BytesMut),
    Upload(Upload),
}

/// Writes one object from `rx`. Returns the stored size after `Commit`; if the channel closes
/// without `Commit` the object is discarded and `Ok(None)` returned.
pub async fn write_object(
    store: Store,
    key: String,
    expected_len: u64,
    single_put_limit: u64,
    mut rx: mpsc::Receiver<FromSeal>,
) -> Result<Option<u64>, StoreError> {
    let mut sink = if expected_len <= single_put_limit {
        Sink::Buffer(BytesMut::with_capacity(expected_len as usize))
    } else {
        Sink::Upload(store.begin_upload(&key).await?)
    };
    let mut written = 0u64;
    while let Some(msg) = rx.recv().await {
        match msg {
            FromSeal::Sealed(b) => {
                written += b.len() as u64;
                let wrote = match &mut sink {
                    Sink::Buffer(buf) => {
                        buf.extend_from_slice(&b);
                        Ok(())
                    }
                    Sink::Upload(up) => up.write(b).await,
                };
                if let Err(e) = wrote {
                    // A failed part fails the upload: abort it now, so the store keeps no
                    // orphaned multipart upload (the retry starts a fresh one).
                    if let Sink::Upload(up) = sink {
                        let _ = up.abort().await;
                    }
                    return Err(e);
                }
            }
            FromSeal::Commit | FromSeal::CommitAs(_) => {
                match sink {
                    Sink::Buffer(buf) => store.put_new(&key, buf.freeze()).await?,
                    Sink::Upload(up) => up.finish().await?,
                }
                return Ok(Some(written));
            }
        }
    }
    if let Sink::Upload(up) = sink {
        up.abort().await?;
    }
    Ok(None)
}

/// Why an upload attempt of a spool record did not end in the store.
enum Attempt {
    /// The store is slow or down: try again later.
    Retry(String),
    /// It can never succeed (damaged record, different content under the key).
    Never(StoreErrorKind, String),
}

impl crate::Pipeline {
    /// Starts the delivery stage: spool records go to their tenant's store, a few at a time,
    /// each retried with capped exponential backoff and jitter until the store takes it; then
    /// to the tenant's replicas, if it has any, in slots of their own, so that a replica
    /// outage never holds up writes to primary stores. Call once per pipeline, inside a tokio
    /// runtime.
    pub fn spawn_delivery(&self) -> tokio::task::JoinHandle<()> {
        let p = self.clone();
        tokio::spawn(async move {
            let Some(mut queue) = p.spool.take_queue() else {
                return;
            };
            let slots = Arc::new(Semaphore::new(p.config.upload_concurrency.max(1)));
            let replica_slots = Arc::new(Semaphore::new(p.config.upload_concurrency.max(1)));
            while let Some(record) = queue.recv().await {
                let permit = slots.clone().acquire_owned().await.expect("never closed");
                let (p, replica_slots) = (p.clone(), replica_slots.clone());
                tokio::spawn(async move {
                    p.deliver(record, replica_slots).await;
                    drop(permit);
                });
            }
        })
    }

    /// Stores `record` in the tenant's primary store, then hands it to a replica slot that
    /// copies it to each replica; the record is erased only once every copy is stored.
    async fn deliver(&self, record: Arc<Record>, replica_slots: Arc<Semaphore>) {
        let primary = self.store_for(&record.meta.tenant).clone();
        let Some(stored_bytes) = self.store_copy(&primary, &record, true).await else {
            return; // quarantined
        };
        let replicas = self.replicas_for(&record.meta.tenant).to_vec();
        if replicas.is_empty() {
            self.erase_delivered(&record, stored_bytes);
            return;
        }
        record.set_status(Delivery::Replicating { stored_bytes });
        self.delivery.replicating(true);
        let p = self.clone();
        tokio::spawn(async move {
            let _slot = replica_slots.acquire_owned().await.expect("never closed");
            let mut all = true;
            for replica in &replicas {
                if p.store_copy(replica, &record, false).await.is_none() {
                    all = false; // quarantined
                    break;
                }
            }
            p.delivery.replicating(false);
            if all {
                p.erase_delivered(&record, stored_bytes);
            }
        });
    }

    fn erase_delivered(&self, record: &Record, stored_bytes: u64) {
        if let Err(e) = self.spool.delivered(record, stored_bytes) {
            warn!(error = %e, "spool record delivered but not fully erased");
        }
        debug!(object = %record.meta.object_key, "delivered");
    }

    /// Writes `record` into `store`, retrying until it takes it; the stored size, or `None`
    /// when it never can (the record is then quarantined). Only the primary's failures are
    /// the record's status: once the primary has it, the page is stored as far as `ack =
    /// "stored"` is concerned.
    async fn store_copy(&self, store: &Store, record: &Arc<Record>, primary: bool) -> Option<u64> {
        // Forever, capped and jittered, so retries of many records do not align.
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(RETRY_FIRST)
            .with_max_delay(RETRY_MAX)
            .with_jitter()
            .without_max_times()
            .build();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.upload(store, record, attempts).await {
                Ok(stored_bytes) => return Some(stored_bytes),
                Err(Attempt::Never(kind, why)) => {
                    self.delivery.error(kind);
                    self.spool
                        .quarantine(record, &format!("{}: {why}", store.name()));
                    return None;
                }
                Err(Attempt::Retry(why)) => {
                    self.delivery.error(StoreErrorKind::Unavailable);
                    self.delivery.retry();
                    if attempts == 1 || attempts.is_multiple_of(10) {
                        warn!(object = %record.meta.object_key, store = store.name(), attempts, error = %why, "store write failed; will retry");
                    }
                    if primary {
                        record.set_status(Delivery::Retrying(why));
                    }
                    tokio::time::sleep(delays.next().unwrap_or(RETRY_MAX)).await;
                }
            }
        }
    }

    /// One attempt: stream the record's body from the spool into the store, and commit the
    /// object only if every byte read back matches the SHA-256 recorded when it was spooled.
    async fn upload(
        &self,
        store: &Store,
        record: &Arc<Record>,
        attempt: u32,
    ) -> Result<u64, Attempt> {
        let meta = &record.meta;
        let retry = |e: StoreError| {
            if e.is_retryable() {
                Attempt::Retry(e.to_string())
            } else {
                Attempt::Never(StoreErrorKind::Rejected, e.to_string())
            }
        };
        if record.recovered || attempt > 1 {
            // A crash, or a failed attempt whose own clean-up failed too (the store vanished
            // under it), may have left an upload of this object half-way: its staging files
            // go before this attempt.
            match store.remove_crash_leftovers(&meta.object_key) {
                Ok(0) => {}
                Ok(n) => debug!(object = %meta.object_key, files = n, "crash leftovers removed"),
                Err(e) => return Err(retry(e)),
            }
        }
        // An earlier attempt, or a crash between the store's answer and the spool's erase,
        // may have stored it already: ask before reading the body back. A first attempt needs
        // no such question: the conditional create below answers AlreadyExists in the rare
        // case (a direct write that timed out but landed), and that is checked the same way.
        if (record.recovered || attempt > 1)
            && store.exists(&meta.object_key).await.map_err(retry)?
        {
            return self.check_stored(store, record).await;
        }
        let (body_tx, mut body_rx) = mpsc::channel::<Bytes>(4);
        let spool = self.spool.clone();
        let rec = record.clone();
        let reader = tokio::task::spawn_blocking(move || spool.read_body(&rec, &body_tx));
        let (to_store, store_rx) = mpsc::channel(4);
        let writer = tokio::spawn(write_object(
            store.clone(),
            meta.object_key.clone(),
            meta.sealed_size,
            self.config.single_put_limit,
            store_rx,
        ));
        let mut sent_all = true;
        while let Some(b) = body_rx.recv().await {
            if to_store.send(FromSeal::Sealed(b)).await.is_err() {
                sent_all = false; // the store stage failed; its error says why
                break;
            }
        }
        drop(body_rx);
        let read = reader.await.expect("spool reader panicked");
        if read.is_ok() && sent_all {
            let _ = to_store.send(FromSeal::Commit).await;
        }
        drop(to_store);
        let written = writer.await.expect("store stage panicked");
        match (read, written) {
            (Err(e), _) => Err(Attempt::Never(StoreErrorKind::Damaged, e.to_string())),
            (Ok(()), Ok(Some(n))) => Ok(n),
            (Ok(()), Ok(None)) => Err(Attempt::Retry("upload stopped early".into())),
            (Ok(()), Err(StoreError::AlreadyExists(_))) => self.check_stored(store, record).await,
            (Ok(()), Err(e)) => Err(retry(e)),
        }
    }

    /// `store` already has an object at the record's key: it counts as delivered only if
    /// it opens to the same plaintext.
    async fn check_stored(&self, store: &Store, record: &Record) -> Result<u64, Attempt> {
        let meta = &record.meta;
        let read = self
            .read_through(store, &meta.tenant, &meta.object_key)
            .await;
        match read {
            Ok((digest, size))
                if hex::encode(digest) == meta.plain_sha256 && size == meta.plain_size =>
            {
                Ok(store
                    .size(&meta.object_key)
                    .await
                    .map_err(|e| Attempt::Retry(e.to_string()))?
                    .unwrap_or(0))
            }
            Ok(_) => Err(Attempt::Never(
                StoreErrorKind::Rejected,
                format!(
                    "the store holds different content under {}",
                    meta.object_key
                ),
            )),
            Err(crate::PipelineError::Store(e)) => Err(Attempt::Retry(e.to_string())),
            Err(crate::PipelineError::NotFound(_)) => Err(Attempt::Retry("object vanished".into())),
            Err(e) => Err(Attempt::Never(StoreErrorKind::Damaged, e.to_string())),
        }
    }
}

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How long ingest waits for the store to say whether a key exists before spooling anyway.
const STORE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What became of a direct store write.
pub(crate) enum Direct {
    Stored(u64),
    /// Something is at the key already: the caller compares.
    Exists,
    /// The store failed; the object is now a spool record.
    Spilled(Arc<Record>),
}

/// The store side of ingest: a small page written straight from memory, and the check
/// whether a retried page is stored already.
impl crate::Pipeline {
    /// The fast path of `ack = "stored"`: a small sealed object goes to the store straight
    /// from memory. If the store fails or does not answer within `ack_timeout`, the object is
    /// written to the spool after all and the delivery stage retries it from there, so a page
    /// never depends on memory for longer than one attempt. With `ack = "stored"` the spool
    /// file would add nothing to durability (the scanner resends anything not acknowledged),
    /// only disk traffic.
    pub(crate) async fn put_direct(
        &self,
        tenant: &str,
        key: &str,
        entry: &PageEntry,
        sealed: Bytes,
        reservation: spool::Reservation,
    ) -> Result<Direct, PipelineError> {
        if !self.replicas_for(tenant).is_empty() {
            // Copies to replicas follow through the spool (with its retries), so a tenant
            // with replicas has every object spooled; the record lives until every copy is
            // stored.
            let record = self
                .spool_sealed(reservation, key, entry.sha256, entry.size, sealed)
                .await?;
            return Ok(Direct::Spilled(record));
        }
        let store = self.store_for(tenant);
        let len = sealed.len() as u64;
        let why =
            match tokio::time::timeout(self.config.ack_timeout, store.put_new(key, sealed.clone()))
                .await
            {
                Ok(Ok(())) => return Ok(Direct::Stored(len)),
                Ok(Err(StoreError::AlreadyExists(_))) => return Ok(Direct::Exists),
                Ok(Err(e)) if e.is_retryable() => {
                    self.delivery.error(StoreErrorKind::Unavailable);
                    e.to_string()
                }
                Ok(Err(e)) => {
                    self.delivery.error(StoreErrorKind::Rejected);
                    return Err(e.into());
                }
                Err(_) => {
                    self.delivery.error(StoreErrorKind::Timeout);
                    format!("no answer within {:?}", self.config.ack_timeout)
                }
            };
        tracing::debug!(object = key, error = %why, "direct store write failed; spooling");
        let record = self
            .spool_sealed(reservation, key, entry.sha256, entry.size, sealed)
            .await?;
        Ok(Direct::Spilled(record))
    }

    /// Whether the store already holds `key`. A store that cannot answer (an outage) counts
    /// as "no": the object is spooled anyway, and the delivery stage checks again before it
    /// writes, so a retry is still never stored twice.
    pub(crate) async fn stored_already(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<bool, PipelineError> {
        let store = self.store_for(tenant);
        match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.exists(key)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) if e.is_retryable() => {
                tracing::debug!(error = %e, "store unreachable; spooling without checking");
                Ok(false)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                tracing::debug!(
                    store = store.name(),
                    "store did not answer; spooling without checking"
                );
                Ok(false)
            }
        }
    }
}
