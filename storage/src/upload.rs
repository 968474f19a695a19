//! Streamed uploads of large objects: multipart uploads through object_store, or, on a local
//! store writing past the page cache, one staging file written directly.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};

use crate::{direct, durable, map_err, sync, StoreError, PART_CONCURRENCY};

/// What an upload writes through.
pub(crate) enum Writer {
    /// object_store's parts (remote stores, and local ones writing through the cache).
    Multipart(WriteMultipart),
    /// A local store's staging file, written past the page cache.
    Direct(direct::DirectStream),
}

/// A streamed upload in progress. Nothing is visible at the key until [`Upload::finish`]
/// succeeds; [`Upload::abort`] (or dropping it) discards what was written.
pub struct Upload {
    pub(crate) writer: Option<Writer>,
    pub(crate) key: String,
    pub(crate) store: String,
    /// A local store's syncer, the store and the object: the finished object counts only
    /// once synced.
    pub(crate) durable: Option<(Arc<sync::Syncer>, Arc<dyn ObjectStore>, Path)>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("key", &self.key).finish()
    }
}

impl Upload {
    /// Appends bytes, waiting while too many parts are in flight (backpressure).
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        match self.writer.as_mut().expect("upload already finished") {
            Writer::Multipart(w) => {
                w.wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(|e| map_err(&self.store, &self.key, e))?;
                w.put(bytes);
                Ok(())
            }
            Writer::Direct(stream) => stream
                .write(&bytes)
                .await
                .map_err(|e| io_error(&self.store, &self.key, e)),
        }
    }

    /// Completes the upload; the object becomes visible atomically.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        match self.writer.take().expect("upload already finished") {
            Writer::Multipart(w) => {
                w.finish()
                    .await
                    .map_err(|e| map_err(&self.store, &self.key, e))?;
            }
            Writer::Direct(stream) => match stream.finish().await {
                Ok(direct::Written::Stored) => {}
                Ok(direct::Written::AlreadyExists) => {
                    return Err(StoreError::AlreadyExists(self.key.clone()))
                }
                Err(e) => return Err(io_error(&self.store, &self.key, e)),
            },
        }
        match self.durable.take() {
            Some((syncer, inner, path)) => durable(&syncer, &inner, &path, &self.store).await,
            None => Ok(()),
        }
    }

    /// Discards the upload and everything written so far.
    pub async fn abort(mut self) -> Result<(), StoreError> {
        match self.writer.take() {
            Some(Writer::Multipart(w)) => w
                .abort()
                .await
                .map_err(|e| map_err(&self.store, &self.key, e)),
            // Dropping it removes its staging file.
            Some(Writer::Direct(stream)) => {
                drop(stream);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(Writer::Multipart(w)) = self.writer.take() {
            // Dropped without finish (the task was cancelled): abort in the background so no
            // staging file or orphaned multipart upload is left behind.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}

/// A local store's file I/O failed: the store is unavailable (a full disk, a failing device)
/// until its operator acts; the write may be retried.
pub(crate) fn io_error(store: &str, key: &str, e: std::io::Error) -> StoreError {
    StoreError::Unavailable {
        store: store.into(),
        message: format!("writing object {key}: {e}"),
    }
}
