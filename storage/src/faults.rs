//! A fault-injecting decorator: any store, with failures switched on and off by a test. It
//! turns a real backend into one that is down, or one whose multipart uploads break after a
//! number of parts, so outage behaviour is tested against the same code paths and the same
//! real servers as everything else — the decorator only refuses, it never imitates a store.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// The switches of a [`FaultyStore`]. Cheap to clone; clones share the switches.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    down: AtomicBool,
    /// Parts accepted (over all uploads) before every further part fails; 0 = never fail.
    parts_budget: AtomicU64,
    parts_seen: AtomicU64,
    refused: AtomicU64,
}

impl Faults {
    /// Every operation fails (as a network outage would) while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// From now on, multipart parts fail once `n` more have been accepted (`n` = 0: never).
    pub fn fail_parts_after(&self, n: u64) {
        self.state.parts_seen.store(0, Ordering::SeqCst);
        self.state.parts_budget.store(n, Ordering::SeqCst);
    }

    /// Operations refused so far.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    fn check(&self, what: &str) -> object_store::Result<()> {
        if self.state.down.load(Ordering::SeqCst) {
            self.state.refused.fetch_add(1, Ordering::SeqCst);
            return Err(injected(what));
        }
        Ok(())
    }

    fn check_part(&self) -> object_store::Result<()> {
        self.check("put_part")?;
        let budget = self.state.parts_budget.load(Ordering::SeqCst);
        let seen = self.state.parts_seen.fetch_add(1, Ordering::SeqCst);
        if budget > 0 && seen >= budget {
            self.state.refused.fetch_add(1, Ordering::SeqCst);
            return Err(injected("put_part"));
        }
        Ok(())
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faults",
        source: format!("injected failure in {what}: connection refused").into(),
    }
}

/// A store behind [`Faults`].
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Faults,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> Self {
        FaultyStore { inner, faults }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.faults.check("put")?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.faults.check("put_multipart")?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            faults: self.faults.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.faults.check("get")?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.faults.check("get_ranges")?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if let Err(e) = self.faults.check("delete") {
            return stream::once(async move { Err(e) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.faults.check("list") {
            return stream::once(async move { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.faults.check("list")?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.faults.check("copy")?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    faults: Faults,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.faults.check_part() {
            Ok(()) => self.inner.put_part(data),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.faults.check("complete")?;
        self.inner.complete().await
    }

    /// Aborting always reaches the real store: an outage must not strand the upload there.
    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
