//! Stage 5, store: sealed bytes go to the object store, visible only once complete.
//!
//! Small pages are written in one conditional create; large ones stream up as a multipart
//! upload, so a page larger than memory never sits in memory. Either way nothing appears at
//! the key unless the writer is told to commit, and an upload that is not committed is
//! aborted, leaving nothing behind.

use bytes::{Bytes, BytesMut};
use quire_storage::{Store, StoreError, Upload};
use tokio::sync::mpsc;

/// What the seal stage sends the store stage.
#[derive(Debug)]
pub enum ToStore {
    /// The next sealed bytes of the object, in order.
    Sealed(Bytes),
    /// Every byte was sent and the page checked out: make the object visible.
    Commit,
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
    mut rx: mpsc::Receiver<ToStore>,
) -> Result<Option<u64>, StoreError> {
    let mut sink = if expected_len <= single_put_limit {
        Sink::Buffer(BytesMut::with_capacity(expected_len as usize))
    } else {
        Sink::Upload(store.begin_upload(&key).await?)
    };
    let mut written = 0u64;
    while let Some(msg) = rx.recv().await {
        match msg {
            ToStore::Sealed(b) => {
                written += b.len() as u64;
                match &mut sink {
                    Sink::Buffer(buf) => buf.extend_from_slice(&b),
                    Sink::Upload(up) => up.write(b).await?,
                }
            }
            ToStore::Commit => {
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
