//! Where sealed objects go: one small interface over the `object_store` backends.
//!
//! Quire needs only a handful of operations from a store: create an object that must not
//! exist yet (so retries never overwrite), stream a large object up in parts, read it back
//! as a stream, list a tenant's prefix, and delete. [`Store`] offers exactly those over any
//! [`object_store::ObjectStore`] and turns backend failures into one typed [`StoreError`]
//! that says whether the caller may retry.
#![forbid(unsafe_code)]

mod direct;
pub mod faults;
mod sync;
mod upload;

pub use upload::Upload;

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};

/// The alignment in memory at which an object's bytes are written to a local store without
/// being copied first ([`LocalWrites::Direct`]): producers of large objects may lay them out
/// so.
pub const DIRECT_WRITE_ALIGN: usize = direct::ALIGN;

/// Size of each part of a multipart upload.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once.
pub const PART_CONCURRENCY: usize = 4;

/// HTTP client settings of the remote stores. A request may take up to five minutes, so a
/// slow but progressing upload of an 8 MiB part (down to about 28 KB/s) is not cut off, while
/// a dead endpoint is noticed within the 5 s connect timeout. object_store's own retries are
/// few and short: the spool's delivery stage retries for as long as it takes, with its own
/// backoff, and must hear about an outage rather than wait minutes inside one request.
fn remote_client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_timeout(std::time::Duration::from_secs(300))
        .with_connect_timeout(std::time::Duration::from_secs(5))
}

fn remote_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(20),
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object {0} already exists")]
    AlreadyExists(String),
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("object store {store} unavailable: {message}")]
    Unavailable { store: String, message: String },
}

impl StoreError {
    /// Whether the same operation may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Where and how to reach an S3-compatible store.
#[derive(Clone)]
pub struct S3Options {
    /// e.g. `https://s3.eu-central-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// Where and how to reach an Azure Blob container.
#[derive(Clone)]
pub struct AzureOptions {
    /// The account URL, e.g. `https://ACCOUNT.blob.core.windows.net` or
    /// `http://127.0.0.1:10000/devstoreaccount1` for Azurite.
    pub endpoint: String,
    pub account: String,
    pub access_key: String,
    pub container: String,
}

impl std::fmt::Debug for AzureOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureOptions")
            .field("endpoint", &self.endpoint)
            .field("account", &self.account)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

/// An object's key and size, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// How a local store makes a write durable before it counts as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LocalSync {
    /// One `syncfs(2)` of the store's filesystem, shared by the writes finishing together
    /// (Linux; elsewhere as `Each`). It also flushes whatever else is dirty on that
    /// filesystem, so it suits a filesystem the store does not share with busy writers.
    #[default]
    Batched,
    /// An fsync of each object's file and of its directory.
    Each,
}

/// How a local store writes a new object's bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LocalWrites {
    /// Past the page cache (`O_DIRECT`, Linux): sealed objects are seldom read soon after,
    /// and filling cache pages is most of what a write costs. A filesystem that refuses it
    /// is written through the cache instead. Streamed uploads (pages over the pipeline's
    /// `single_put_limit`) go past it too, into one staging file.
    #[default]
    Direct,
    /// Through the page cache, as any program writes.
    Cached,
}

/// A handle on one object store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    name: String,
    /// The directory of a local store: where a crashed writer's staging files may be.
    local_root: Option<std::path::PathBuf>,
    /// A local store's writes wait for this before they count as stored.
    syncer: Option<Arc<sync::Syncer>>,
    /// A local store that writes new objects past the page cache: the path mapping of its
    /// object_store and the writer.
    direct: Option<(
        Arc<object_store::local::LocalFileSystem>,
        Arc<direct::DirectWriter>,
    )>,
}

impl Store {
    /// A store on the local filesystem under `root` (created if missing). Objects are written
    /// to a staging file and renamed into place, so none is ever seen half-written, and a
    /// write returns only once it is on stable storage: on Linux after a `syncfs` of the
    /// filesystem shared with the writes finishing at the same time (`sync.rs`), elsewhere
    /// after an fsync of the file and its directory.
    ///
    /// New objects are written past the page cache where the filesystem allows it
    /// ([`LocalWrites::Direct`]).
    pub fn local(root: &FsPath) -> Result<Store, StoreError> {
        Store::local_with(root, LocalSync::Batched, LocalWrites::Direct)
    }

    /// [`Store::local`], syncing and writing as `sync` and `writes` say.
    pub fn local_with(
        root: &FsPath,
        sync: LocalSync,
        writes: LocalWrites,
    ) -> Result<Store, StoreError> {
        let name = format!("local:{}", root.display());
        let unavailable = |e: std::io::Error| StoreError::Unavailable {
            store: name.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(root).map_err(unavailable)?;
        let syncer = if cfg!(target_os = "linux") && sync == LocalSync::Batched {
            Some(Arc::new(
                sync::Syncer::for_directory(root).map_err(unavailable)?,
            ))
        } else {
            None
        };
        let fs = object_store::local::LocalFileSystem::new_with_prefix(root)
            .map_err(|e| map_err("local", "", e))?
            .with_automatic_cleanup(true)
            .with_fsync(syncer.is_none());
        let fs = Arc::new(fs);
        // Direct writes rely on the batched sync for the file's size and directory entries.
        let direct =
            (cfg!(target_os = "linux") && writes == LocalWrites::Direct && syncer.is_some())
                .then(|| (fs.clone(), Arc::new(direct::DirectWriter::new())));
        Ok(Store {
            inner: fs,
            name,
            local_root: Some(root.to_path_buf()),
            syncer,
            direct,
        })
    }

    /// An S3-compatible store. Credentials are static and the endpoint explicit: nothing is
    /// read from the environment and the client never falls back to the cloud's instance
    /// metadata service.
    pub fn s3(o: &S3Options) -> Result<Store, StoreError> {
        use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
        let name = format!("s3:{}/{}", o.endpoint, o.bucket);
        let s3 = AmazonS3Builder::new()
            // First: `with_allow_http` below writes into these options.
            .with_client_options(remote_client_options())
            .with_retry(remote_retry())
            .with_endpoint(&o.endpoint)
            .with_allow_http(o.endpoint.starts_with("http://"))
            .with_region(&o.region)
            .with_bucket_name(&o.bucket)
            .with_access_key_id(&o.access_key_id)
            .with_secret_access_key(&o.secret_access_key)
            .with_virtual_hosted_style_request(false)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            // Every request carries the SHA-256 of its body (x-amz-checksum-sha256), and the
            // server refuses a write whose bytes do not match: the end-to-end check that the
            // bytes stored are the bytes sealed.
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
            .build()
            .map_err(|e| map_err(&name, "", e))?;
        Ok(Store {
            inner: Arc::new(s3),
            name,
            local_root: None,
            syncer: None,
            direct: None,
        })
    }

    /// An Azure Blob container, addressed by an explicit account URL (for Azurite,
    /// `http://127.0.0.1:PORT/ACCOUNT`) with a static account key.
    pub fn azure(o: &AzureOptions) -> Result<Store, StoreError> {
        use object_store::azure::MicrosoftAzureBuilder;
        let name = format!("azure:{}/{}", o.endpoint, o.container);
        let az = MicrosoftAzureBuilder::new()
            // First: `with_allow_http` below writes into these options.
            .with_client_options(remote_client_options())
            .with_retry(remote_retry())
            .with_account(&o.account)
            .with_access_key(&o.access_key)
            .with_container_name(&o.container)
            .with_endpoint(o.endpoint.clone())
            .with_allow_http(o.endpoint.starts_with("http://"))
            .build()
            .map_err(|e| map_err(&name, "", e))?;
        Ok(Store {
            inner: Arc::new(az),
            name,
            local_root: None,
            syncer: None,
            direct: None,
        })
    }

    /// An in-memory store, for benchmarks and unit tests of code above the store.
    pub fn memory() -> Store {
        Store {
            inner: Arc::new(object_store::memory::InMemory::new()),
            name: "memory".into(),
            local_root: None,
            syncer: None,
            direct: None,
        }
    }

    /// Wraps any `object_store` backend.
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, name: impl Into<String>) -> Store {
        Store {
            inner,
            name: name.into(),
            local_root: None,
            syncer: None,
            direct: None,
        }
    }

    /// This store behind a fault-injecting decorator, and its switches (outage tests).
    pub fn with_faults(&self) -> (Store, faults::Faults) {
        let f = faults::Faults::default();
        let inner = Arc::new(faults::FaultyStore::new(self.inner.clone(), f.clone()));
        (
            Store {
                inner,
                name: self.name.clone(),
                local_root: self.local_root.clone(),
                syncer: self.syncer.clone(),
                // Every write goes through the decorator, so its faults reach it.
                direct: None,
            },
            f,
        )
    }

    /// A short description for logs (no credentials).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, key: &str) -> Result<Path, StoreError> {
        Path::parse(key).map_err(|e| StoreError::InvalidKey {
            key: key.into(),
            reason: e.to_string(),
        })
    }

    /// Writes `bytes` at `key` only if no object is there (conditional create).
    pub async fn put_new(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match self.direct_target(key, &path)? {
            Some((writer, dest)) => {
                let written = direct::blocking(move || writer.put_new(&dest, &bytes))
                    .await
                    .map_err(|e| upload::io_error(&self.name, key, e))?;
                if written == direct::Written::AlreadyExists {
                    return Err(StoreError::AlreadyExists(key.into()));
                }
            }
            None => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                self.inner
                    .put_opts(&path, PutPayload::from_bytes(bytes), opts)
                    .await
                    .map_err(|e| map_err(&self.name, key, e))?;
            }
        }
        match &self.syncer {
            Some(syncer) => durable(syncer, &self.inner, &path, &self.name).await,
            None => Ok(()),
        }
    }

    /// The writer and the file of the object at `path`, if this store writes new objects
    /// past the page cache (and its filesystem has not refused that).
    fn direct_target(
        &self,
        key: &str,
        path: &Path,
    ) -> Result<Option<(Arc<direct::DirectWriter>, std::path::PathBuf)>, StoreError> {
        match &self.direct {
            Some((fs, writer)) if writer.enabled() => {
                let dest = fs
                    .path_to_filesystem(path)
                    .map_err(|e| map_err(&self.name, key, e))?;
                Ok(Some((writer.clone(), dest)))
            }
            _ => Ok(None),
        }
    }

    /// Starts a streamed upload of a large object. Fails with `AlreadyExists` if an object is
    /// at `key` already; callers serialise uploads per key so that check cannot race locally.
    pub async fn begin_upload(&self, key: &str) -> Result<Upload, StoreError> {
        if self.exists(key).await? {
            return Err(StoreError::AlreadyExists(key.into()));
        }
        self.begin(key, direct::Publish::Create).await
    }

    /// Starts a streamed upload that replaces whatever is at `key` when it completes
    /// (key rotation rewrites headers this way). Readers see the old object or the new one,
    /// never a mix.
    pub async fn begin_replace(&self, key: &str) -> Result<Upload, StoreError> {
        self.begin(key, direct::Publish::Replace).await
    }

    /// Starts a streamed upload: past the page cache on a local store that writes so
    /// (published as `how` says), else in object_store's parts (which replace).
    async fn begin(&self, key: &str, how: direct::Publish) -> Result<Upload, StoreError> {
        let path = self.path(key)?;
        let writer = match self.direct_target(key, &path)? {
            Some((writer, dest)) => {
                let stream = direct::DirectStream::begin(writer, dest, how)
                    .await
                    .map_err(|e| upload::io_error(&self.name, key, e))?;
                upload::Writer::Direct(stream)
            }
            None => {
                let up = self
                    .inner
                    .put_multipart_opts(&path, PutMultipartOptions::default())
                    .await
                    .map_err(|e| map_err(&self.name, key, e))?;
                upload::Writer::Multipart(WriteMultipart::new_with_chunk_size(up, PART_SIZE))
            }
        };
        Ok(Upload {
            writer: Some(writer),
            key: key.into(),
            store: self.name.clone(),
            durable: self.syncer.clone().map(|s| (s, self.inner.clone(), path)),
        })
    }

    /// Removes what a writer killed mid-upload of `key` may have left: for a local store, its
    /// staging files (`<key>#<n>`, never visible as objects but still on disk). Call only when
    /// no upload of `key` is running (after a restart, before retrying). Remote stores keep
    /// a crashed process's multipart upload until their own expiry (an S3 lifecycle rule
    /// `AbortIncompleteMultipartUpload`; Azure drops uncommitted blocks after 7 days).
    /// Returns how many files were removed.
    pub fn remove_crash_leftovers(&self, key: &str) -> Result<u32, StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let path = self.path(key)?;
        let dest = root.join(path.as_ref());
        let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Ok(0);
        };
        let prefix = format!("{}#", name.to_string_lossy());
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(StoreError::Unavailable {
                    store: self.name.clone(),
                    message: e.to_string(),
                })
            }
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let n = entry.file_name();
            let n = n.to_string_lossy();
            if n.strip_prefix(&prefix).is_some_and(staging_suffix)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every staging file writers killed mid-upload left under `prefix` (see
    /// [`Store::remove_crash_leftovers`]): for a finished job, whose pages were then stored
    /// by another writer (another node, or this one after a restart). Call only when no
    /// upload under `prefix` should still be running. Returns how many files were removed.
    pub fn remove_leftovers_under(&self, prefix: &str) -> Result<u32, StoreError> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let unavailable = |e: std::io::Error| StoreError::Unavailable {
            store: self.name.clone(),
            message: e.to_string(),
        };
        let mut removed = 0;
        let mut dirs = vec![root.join(self.path(prefix)?.as_ref())];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable(e)),
            };
            for entry in entries {
                let entry = entry.map_err(unavailable)?;
                // Not following links: the store's own directories only.
                if entry.file_type().map_err(unavailable)?.is_dir() {
                    dirs.push(entry.path());
                    continue;
                }
                let name = entry.file_name();
                let staged = name
                    .to_string_lossy()
                    .rsplit_once('#')
                    .is_some_and(|(key, n)| !key.is_empty() && staging_suffix(n));
                if staged {
                    std::fs::remove_file(entry.path()).map_err(unavailable)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Whether an object exists at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.size(key).await?.is_some())
    }

    /// The size of the object at `key`, `None` if there is none.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(key)?;
        match self.inner.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(&self.name, key, e)),
        }
    }

    /// Reads a whole object into memory (for small objects such as manifests).
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let r = self
            .inner
            .get(&path)
            .await
            .map_err(|e| map_err(&self.name, key, e))?;
        r.bytes().await.map_err(|e| map_err(&self.name, key, e))
    }

    /// Streams an object in the pieces the backend delivers.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let path = self.path(key)?;
        let r = self
            .inner
            .get(&path)
            .await
            .map_err(|e| map_err(&self.name, key, e))?;
        let (name, k) = (self.name.clone(), key.to_string());
        Ok(r.into_stream()
            .map_err(move |e| map_err(&name, &k, e))
            .boxed())
    }

    /// Lists every object under `prefix` (a folder-like key prefix without trailing slash).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let path = self.path(prefix)?;
        let mut out: Vec<ObjectInfo> = self
            .inner
            .list(Some(&path))
            .map_ok(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
            })
            .try_collect()
            .await
            .map_err(|e| map_err(&self.name, prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Reads `range` (byte offsets) of an object.
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        self.inner
            .get_range(&path, range)
            .await
            .map_err(|e| map_err(&self.name, key, e))
    }

    /// Deletes the object at `key`; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(&self.name, key, e)),
        }
    }
}

/// Waits until the object just written at `path` is on stable storage (a local store's
/// batched sync). If that fails the object is deleted: it was never acknowledged, and a
/// retry must write it again rather than find it and trust it.
async fn durable(
    syncer: &sync::Syncer,
    inner: &Arc<dyn ObjectStore>,
    path: &Path,
    store: &str,
) -> Result<(), StoreError> {
    match syncer.sync().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = inner.delete(path).await;
            Err(StoreError::Unavailable {
                store: store.into(),
                message: format!("the object could not be made durable (syncfs: {e})"),
            })
        }
    }
}

fn map_err(store: &str, key: &str, e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound(key.into()),
        object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists(key.into()),
        object_store::Error::InvalidPath { source } => StoreError::InvalidKey {
            key: key.into(),
            reason: source.to_string(),
        },
        other => StoreError::Unavailable {
            store: store.into(),
            message: other.to_string(),
        },
    }
}

/// Whether `n` (what follows `#` in a file name) is a local store's staging number.
fn staging_suffix(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests;
