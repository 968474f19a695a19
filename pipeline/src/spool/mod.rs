//! Between seal and store: a write-ahead spool of sealed objects on local disk.
//!
//! Every object the pipeline writes (pages and manifests) first becomes a spool *record*, and
//! the delivery task (see [`crate::store`]) moves records to the object store, retrying with
//! backoff while the store is slow or down. The spool is what lets ingest acknowledge a page
//! before the store does (`ack = "spooled"`), absorb bursts, and survive a store outage up to
//! its capacity; after a crash, [`Spool::open`] finds every complete record and queues it
//! again, and erases what is incomplete.
//!
//! A record is two files, both in the sealed object format (docs/FORMAT.md) under a *spool
//! key*: `<id>.body` holds the tenant-sealed object, sealed once more, and `<id>.meta` says
//! where it goes and what it must hash to. The `.meta` file is the commit record: it is
//! written (and, for `ack = "spooled"`, fsync'd) after the body, so a body without one is
//! an interrupted write. Records hold only ciphertext; the spool key of their epoch makes
//! them readable, and destroying that key once every record of the epoch is delivered erases
//! them for good, wherever the disk may have left copies ([`quire_erase_tracker`] decides
//! when). Keys live in a [`keydir::KeyDir`], by default in RAM.

pub mod keydir;
mod recover;
pub mod space;
mod writer;

use writer::CommittedRecord;
pub use writer::RecordWriter;

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quire_codecs::sealed::{
    self, ChunkCipher, Chunker, Compression, KekRef, SealError, SealedReader, SecretKey,
    DEFAULT_CHUNK_SIZE,
};
use quire_erase_tracker::{EpochTracker, Erase, RecordLatch};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use keydir::KeyDir;

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("spool file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool key directory {path} {why}")]
    Insecure { path: PathBuf, why: String },
    #[error("spool record is damaged: {0}")]
    Corrupt(String),
    #[error("the spool is full ({used} of {capacity} bytes waiting for the object store)")]
    Full { used: u64, capacity: u64 },
    #[error("the spool is full for tenant {tenant}: it holds {held} bytes waiting for the object store, its share is {share}")]
    TenantShareFull {
        tenant: String,
        held: u64,
        share: u64,
    },
}

/// When the scanner hears "stored".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// After the object store confirmed the write and its checksum was verified.
    #[default]
    Stored,
    /// As soon as the sealed page is fsync'd in the spool.
    Spooled,
    /// After the primary store and every replica of the tenant confirmed the write (for a
    /// tenant without replicas, the same as `Stored`).
    Replicated,
}

/// Tunables of the spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Bytes of records waiting for the store before new pages wait, then get `Busy`.
    pub capacity: u64,
    /// How long a page waits for spool space before it is refused as busy.
    pub busy_wait: Duration,
    /// fsync records (and keys) before they count as written. On for `ack = "spooled"`.
    pub durable: bool,
    /// A new epoch (and key) starts after this many records...
    pub epoch_records: u64,
    /// ...or after this long, whichever comes first. Idle epochs close at once.
    pub epoch_age: Duration,
    /// Bytes of small sealed objects that may wait for the store in memory instead of in
    /// spool files (`ack = "stored"` only); beyond it they go to files.
    pub memory: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            capacity: 4 * 1024 * 1024 * 1024,
            busy_wait: Duration::from_secs(5),
            durable: false,
            epoch_records: 4096,
            epoch_age: Duration::from_secs(60),
            memory: 256 * 1024 * 1024,
        }
    }
}

pub use quire_codecs::spool_record::RecordMeta;

/// How far a record has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Waiting for (or in) an upload.
    Queued,
    /// The last attempt failed and will be retried.
    Retrying(String),
    /// The primary store has the object; copies to the tenant's replicas are still on
    /// their way (the record stays until every replica has it).
    Replicating { stored_bytes: u64 },
    /// Every store has the object; the record is gone.
    Stored { stored_bytes: u64 },
    /// Cannot ever be delivered (damaged record, conflicting object); kept for an operator.
    Failed(String),
}

#[derive(Debug)]
struct Epoch {
    id: u64,
    key: SecretKey,
    tracker: EpochTracker,
    opened: Instant,
}

impl Epoch {
    fn kek_ref(&self) -> KekRef {
        KekRef {
            tenant: "quire-spool".into(),
            kek_id: format!("epoch-{:016x}", self.id),
            version: 1,
        }
    }
}

/// A committed record waiting for delivery.
#[derive(Debug)]
pub struct Record {
    name: String,
    epoch: Arc<Epoch>,
    pub meta: RecordMeta,
    latch: RecordLatch,
    reserved: u64,
    status: watch::Sender<Delivery>,
    /// Found in the spool at start-up: an upload of it may have been cut off by the crash.
    pub recovered: bool,
    /// When it was committed to the spool (for a recovered record: when it was found).
    pub since: std::time::Instant,
}

impl Record {
    /// Follows the record's delivery.
    pub fn watch(&self) -> watch::Receiver<Delivery> {
        self.status.subscribe()
    }

    /// Reports a failed attempt (the record stays queued).
    pub fn set_status(&self, d: Delivery) {
        self.status.send_replace(d);
    }
}

#[derive(Debug, Default)]
struct Epochs {
    current: Option<Arc<Epoch>>,
    next_id: u64,
}

use space::{NoRoom, Space};

/// The spool: see the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    keys: KeyDir,
    config: SpoolConfig,
    space: Space,
    memory_used: Mutex<u64>,
    epochs: Mutex<Epochs>,
    records: Mutex<HashMap<String, Arc<Record>>>,
    next_seq: AtomicU64,
    queue: mpsc::UnboundedSender<Arc<Record>>,
    queue_rx: Mutex<Option<mpsc::UnboundedReceiver<Arc<Record>>>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |e| SpoolError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Largest commit record read back: tenant and object key are bounded by the wire protocol,
/// so a real one is well under this.
const MAX_META_LEN: u64 = 64 * 1024;

/// Room to reserve for a page of `plain` bytes: its largest possible sealed size, twice
/// wrapped, so the reservation never falls short.
pub fn reservation_for(plain: u64) -> u64 {
    let chunks = plain / DEFAULT_CHUNK_SIZE as u64 + 2;
    plain + 2 * (chunks * sealed::TAG_LEN as u64 + sealed::MAX_HEADER_LEN as u64) + 4096
}

/// Room held in the spool for one object, whether it waits in memory or in a record; given
/// back on drop unless moved into a record.
#[derive(Debug)]
pub struct Reservation {
    spool: Arc<Spool>,
    tenant: String,
    bytes: u64,
}

/// Room held in the memory budget; given back on drop.
#[derive(Debug)]
pub struct MemoryReservation {
    spool: Arc<Spool>,
    bytes: u64,
}

impl MemoryReservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for MemoryReservation {
    fn drop(&mut self) {
        let mut used = self.spool.memory_used.lock().expect("spool lock");
        *used = used.saturating_sub(self.bytes);
    }
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Reservation {
    /// Hands the room over to a record, which gives it back on delivery: its tenant and
    /// bytes. The reservation itself then gives back nothing.
    fn into_record(mut self) -> (String, u64) {
        (
            std::mem::take(&mut self.tenant),
            std::mem::take(&mut self.bytes),
        )
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.spool.release_space(&self.tenant, self.bytes);
        }
    }
}

impl Spool {
    /// Opens the spool in `dir` with keys in `key_dir`, recovering what a crash left: complete
    /// records are queued for delivery again, incomplete ones and keys that no record needs
    /// are erased. Records whose key is gone (the RAM key directory did not survive a reboot)
    /// can never be read again and are erased too; the count is logged.
    pub fn open(dir: &Path, key_dir: &Path, config: SpoolConfig) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let keys = KeyDir::open(key_dir, config.durable)?;
        let (queue, queue_rx) = mpsc::unbounded_channel();
        let spool = Spool {
            dir: dir.to_path_buf(),
            keys,
            space: Space::new(config.capacity),
            config,
            memory_used: Mutex::new(0),
            epochs: Mutex::new(Epochs::default()),
            records: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
            queue,
            queue_rx: Mutex::new(Some(queue_rx)),
        };
        spool.recover()?;
        Ok(spool)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key directory.
    pub fn key_dir(&self) -> &Path {
        self.keys.path()
    }

    /// Whether records are fsync'd.
    pub fn durable(&self) -> bool {
        self.config.durable
    }

    /// Reserves room for `bytes` of `tenant`'s, waiting up to the configured `busy_wait` for
    /// deliveries to free some. A record larger than the whole capacity is admitted when the
    /// spool is empty; a tenant holds at most its share (see [`space`]).
    pub async fn reserve(
        self: &Arc<Self>,
        tenant: &str,
        bytes: u64,
    ) -> Result<Reservation, SpoolError> {
        let deadline = tokio::time::Instant::now() + self.config.busy_wait;
        loop {
            let freed = self.space.freed.notified();
            let refused = match self.space.try_take(tenant, bytes) {
                Ok(()) => {
                    return Ok(Reservation {
                        spool: self.clone(),
                        tenant: tenant.to_string(),
                        bytes,
                    })
                }
                Err(why) => why,
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(match refused {
                    NoRoom::Spool { used } => SpoolError::Full {
                        used,
                        capacity: self.space.capacity,
                    },
                    NoRoom::TenantShare { held, share } => SpoolError::TenantShareFull {
                        tenant: tenant.to_string(),
                        held,
                        share,
                    },
                });
            }
        }
    }

    /// Room for `bytes` of sealed object in memory, if the memory budget has it (never waits).
    pub fn try_reserve_memory(self: &Arc<Self>, bytes: u64) -> Option<MemoryReservation> {
        let mut used = self.memory_used.lock().expect("spool lock");
        if *used + bytes > self.config.memory {
            return None;
        }
        *used += bytes;
        Some(MemoryReservation {
            spool: self.clone(),
            bytes,
        })
    }

    /// Bytes of sealed objects waiting in memory.
    pub fn memory_used(&self) -> u64 {
        *self.memory_used.lock().expect("spool lock")
    }

    fn release_space(&self, tenant: &str, bytes: u64) {
        self.space.give_back(tenant, bytes);
    }

    /// Bytes reserved by records not yet delivered.
    /// Bytes the spool may hold.
    pub fn capacity(&self) -> u64 {
        self.space.capacity
    }

    pub fn used(&self) -> u64 {
        self.space.used()
    }

    /// Records not yet delivered.
    pub fn len(&self) -> usize {
        self.records.lock().expect("spool lock").len()
    }

    /// How long the oldest record not yet delivered has waited (zero when none waits).
    pub fn oldest_age(&self) -> std::time::Duration {
        let records = self.records.lock().expect("spool lock");
        records
            .values()
            .map(|r| r.since.elapsed())
            .max()
            .unwrap_or_default()
    }

    /// Whether every record has been delivered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Undelivered records whose object key is under `prefix` (a path: `a/b` holds `a/b/c`).
    pub fn pending_under(&self, prefix: &str) -> usize {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        self.records
            .lock()
            .expect("spool lock")
            .keys()
            .filter(|k| k.starts_with(&dir))
            .count()
    }

    /// The undelivered record for `object_key`, if any.
    pub fn pending(&self, object_key: &str) -> Option<Arc<Record>> {
        self.records
            .lock()
            .expect("spool lock")
            .get(object_key)
            .cloned()
    }

    /// The delivery task's end of the queue; `None` after the first call.
    pub fn take_queue(&self) -> Option<mpsc::UnboundedReceiver<Arc<Record>>> {
        self.queue_rx.lock().expect("spool lock").take()
    }

    /// Joins the current epoch, opening a new one (and closing the old) when it is full, old,
    /// or was closed under us because it drained.
    fn join_epoch(&self) -> Result<Arc<Epoch>, SpoolError> {
        let mut epochs = self.epochs.lock().expect("spool lock");
        loop {
            if let Some(cur) = &epochs.current {
                let stale = cur.opened.elapsed() >= self.config.epoch_age
                    || cur.tracker.outstanding() >= self.config.epoch_records;
                if !stale && cur.tracker.try_add() {
                    return Ok(cur.clone());
                }
                let old = epochs.current.take().expect("checked above");
                if old.tracker.close() == Erase::Now {
                    self.keys.destroy(old.id)?;
                }
            }
            let id = epochs.next_id;
            epochs.next_id += 1;
            let key = self.keys.create(id)?;
            epochs.current = Some(Arc::new(Epoch {
                id,
                key,
                tracker: EpochTracker::new(),
                opened: Instant::now(),
            }));
        }
    }

    /// Starts a record for the object `object_key` of `tenant`, whose plaintext hashes to
    /// `plain_sha256`. The writer is blocking (file I/O): run it off the async runtime.
    pub fn writer(
        self: &Arc<Self>,
        reservation: Reservation,
        object_key: &str,
        plain_sha256: [u8; 32],
        plain_size: u64,
    ) -> Result<RecordWriter, SpoolError> {
        let epoch = self.join_epoch()?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{:016x}-{seq:016x}", epoch.id);
        let body_path = self.dir.join(format!("{name}.body"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&body_path)
            .map_err(io(&body_path));
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                self.give_up_epoch(&epoch);
                return Err(e);
            }
        };
        let (header, cipher) = ChunkCipher::create(
            &epoch.key,
            epoch.kek_ref(),
            &format!("spool/{name}/body"),
            Compression::None,
            DEFAULT_CHUNK_SIZE,
        );
        let mut out = BufWriter::with_capacity(1024 * 1024, file);
        if let Err(e) = out.write_all(header.encoded()) {
            self.give_up_epoch(&epoch);
            let _ = fs::remove_file(&body_path);
            return Err(io(&body_path)(e));
        }
        // The room moves into the record and is given back on delivery.
        let (tenant, reserved) = reservation.into_record();
        Ok(RecordWriter {
            spool: self.clone(),
            spool_dir: self.dir.clone(),
            name,
            epoch: Some(epoch),
            meta: RecordMeta {
                tenant,
                object_key: object_key.to_string(),
                plain_sha256: hex::encode(plain_sha256),
                plain_size,
                sealed_sha256: String::new(),
                sealed_size: 0,
            },
            out: Some(out),
            chunker: Chunker::new(DEFAULT_CHUNK_SIZE),
            cipher,
            hasher: Sha256::new(),
            written: 0,
            reserved,
            durable: self.config.durable,
        })
    }

    fn give_up_epoch(&self, epoch: &Epoch) {
        if epoch.tracker.release() == Erase::Now {
            let _ = self.keys.destroy(epoch.id);
        }
    }

    /// Adds a committed record (from [`RecordWriter::commit`]) and queues it for delivery.
    /// If a record for the same object is already waiting, the new one is dropped in favour
    /// of it and the older record returned.
    fn enqueue(&self, committed: CommittedRecord) -> Arc<Record> {
        let CommittedRecord {
            name,
            epoch,
            meta,
            reserved,
        } = committed;
        let mut records = self.records.lock().expect("spool lock");
        if let Some(existing) = records.get(&meta.object_key) {
            let existing = existing.clone();
            drop(records);
            self.remove_files(&name);
            self.release_space(&meta.tenant, reserved);
            self.give_up_epoch(&epoch);
            return existing;
        }
        let record = Arc::new(Record {
            name,
            epoch,
            meta,
            latch: RecordLatch::new(),
            reserved,
            status: watch::channel(Delivery::Queued).0,
            recovered: false,
            since: std::time::Instant::now(),
        });
        records.insert(record.meta.object_key.clone(), record.clone());
        drop(records);
        let _ = self.queue.send(record.clone());
        record
    }

    /// Reads a record's body back: the tenant-sealed object, in pieces, into `out`. Checks
    /// the spool's own authentication and the recorded SHA-256 and size; on any mismatch the
    /// last message is an error and the caller must not commit the upload. Blocking.
    pub fn read_body(&self, record: &Record, out: &mpsc::Sender<Bytes>) -> Result<(), SpoolError> {
        let path = self.dir.join(format!("{}.body", record.name));
        let corrupt = |e: SealError| SpoolError::Corrupt(format!("{}: {e}", path.display()));
        let mut file = fs::File::open(&path).map_err(io(&path))?;
        let mut reader = SealedReader::new();
        let mut cipher: Option<ChunkCipher> = None;
        let object_key = format!("spool/{}/body", record.name);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1024 * 1024];
        let mut eof = false;
        while !eof {
            let n = file.read(&mut buf).map_err(io(&path))?;
            eof = n == 0;
            reader.feed(&buf[..n]);
            if cipher.is_none() {
                match reader.header().map_err(corrupt)? {
                    Some(h) if h.kek == record.epoch.kek_ref() => {
                        cipher = Some(
                            ChunkCipher::open(&record.epoch.key, h, &object_key)
                                .map_err(corrupt)?,
                        )
                    }
                    Some(_) => return Err(SpoolError::Corrupt("body of another epoch".into())),
                    None if eof => return Err(corrupt(SealError::Truncated)),
                    None => continue,
                }
            }
            let c = cipher.as_ref().expect("set above");
            while let Some(mut chunk) = reader.next_chunk(eof).map_err(corrupt)? {
                c.open_chunk(chunk.index, chunk.last, &mut chunk.data)
                    .map_err(corrupt)?;
                hasher.update(&chunk.data);
                size += chunk.data.len() as u64;
                if out.blocking_send(Bytes::from(chunk.data)).is_err() {
                    return Ok(()); // the uploader gave up; nothing to check
                }
            }
        }
        let digest = hex::encode(hasher.finalize());
        if digest != record.meta.sealed_sha256 || size != record.meta.sealed_size {
            return Err(SpoolError::Corrupt(format!(
                "{}: body hashes to {digest} ({size} bytes), the record says {} ({} bytes)",
                path.display(),
                record.meta.sealed_sha256,
                record.meta.sealed_size
            )));
        }
        Ok(())
    }

    /// The store has the record's object (acknowledged, checksum verified): erase the record.
    /// Exactly one caller per record gets `true`; the record's files are removed, its space
    /// freed, and its epoch's key destroyed if it was the last record needing it.
    pub fn delivered(&self, record: &Record, stored_bytes: u64) -> Result<bool, SpoolError> {
        if !record.latch.deliver() {
            return Ok(false);
        }
        self.remove_files(&record.name);
        {
            let mut records = self.records.lock().expect("spool lock");
            if records
                .get(&record.meta.object_key)
                .is_some_and(|r| std::ptr::eq(r.as_ref(), record))
            {
                records.remove(&record.meta.object_key);
            }
        }
        self.release_space(&record.meta.tenant, record.reserved);
        if record.epoch.tracker.release() == Erase::Now {
            self.keys.destroy(record.epoch.id)?;
        }
        // An epoch with nothing left to deliver closes at once, so its key does not outlive
        // the records by the whole epoch age when traffic is light.
        {
            let mut epochs = self.epochs.lock().expect("spool lock");
            if let Some(cur) = epochs.current.clone() {
                if cur.tracker.outstanding() == 0 {
                    epochs.current = None;
                    if cur.tracker.close() == Erase::Now {
                        self.keys.destroy(cur.id)?;
                    }
                }
            }
        }
        record.set_status(Delivery::Stored { stored_bytes });
        Ok(true)
    }

    /// On a clean shutdown: closes the current epoch (destroying its key if nothing needs it)
    /// and removes the key directory if no key is left in it, so a stopped server leaves no
    /// trace in RAM. Records still waiting keep their keys for the next start.
    pub fn shutdown(&self) {
        let mut epochs = self.epochs.lock().expect("spool lock");
        if let Some(cur) = epochs.current.take() {
            if cur.tracker.close() == Erase::Now {
                let _ = self.keys.destroy(cur.id);
            }
        }
        drop(epochs);
        let _ = fs::remove_dir(self.keys.path()); // fails, harmlessly, unless empty
    }

    /// A record can never be delivered (its body is damaged, or the store holds different
    /// content under its key). Its files are renamed `.failed` and its key kept, so an operator
    /// can inspect it while the server runs; the next start no longer recognises it as a
    /// record, so its key is destroyed then like any key no record needs.
    pub fn quarantine(&self, record: &Record, why: &str) {
        for ext in ["meta", "body"] {
            let from = self.dir.join(format!("{}.{ext}", record.name));
            let _ = fs::rename(&from, from.with_extension(format!("{ext}.failed")));
        }
        warn!(record = %record.name, object = %record.meta.object_key, why, "spool record quarantined");
        self.records
            .lock()
            .expect("spool lock")
            .remove(&record.meta.object_key);
        record.set_status(Delivery::Failed(why.to_string()));
    }
}

#[cfg(test)]
mod tests;
