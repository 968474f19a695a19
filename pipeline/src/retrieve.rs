//! The way back for `get`: stream a sealed object from the store, open its chunks in
//! parallel, decompress, and re-hash so the caller can compare with the manifest.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use quire_codecs::manifest::Manifest;
use quire_codecs::sealed::{self, ChunkCipher, SealError, SealedChunk, SealedReader};
use tokio::sync::{mpsc, oneshot};

use crate::compress::Decompressor;
use crate::hash::PageHasher;
use crate::keys;
use crate::{Pipeline, PipelineError};
use quire_storage::Store;

impl Pipeline {
    /// Streams the plaintext of the object at `key` into `out` and returns its SHA-256 and
    /// length. Fails on any tampering; the caller must compare the digest with the manifest's
    /// before trusting what it passed on.
    ///
    /// A tenant with replicas is read from its primary store first; a copy that is missing,
    /// unreachable or fails authentication (even half-way through) hands over to the next,
    /// which goes on where the failed one stopped, after proving that its plaintext up to
    /// there is what was already passed on.
    pub async fn read_object(
        &self,
        tenant: &str,
        key: &str,
        out: mpsc::Sender<Bytes>,
    ) -> Result<([u8; 32], u64), PipelineError> {
        let copies = self.copies_for(tenant);
        let mut sent = Sent::new(out);
        for (i, store) in copies.iter().enumerate() {
            match self.read_copy(store, tenant, key, &mut sent).await {
                Ok(read) => {
                    if i > 0 {
                        tracing::warn!(object = key, store = store.name(), "read from a replica");
                    }
                    return Ok(read);
                }
                Err(e) if i + 1 < copies.len() && another_copy_may_help(&e) => {
                    tracing::warn!(object = key, store = store.name(), error = %e, "copy unreadable; trying the next");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("a tenant has at least its primary store")
    }

    /// Reads `key` from `store` alone (a delivery's check of what one store holds, a scrub
    /// of one copy): its SHA-256 and length; the plaintext is dropped as it comes.
    pub async fn read_through(
        &self,
        store: &Store,
        tenant: &str,
        key: &str,
    ) -> Result<([u8; 32], u64), PipelineError> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let read = self.read_copy(store, tenant, key, &mut Sent::new(tx)).await;
        let _ = drain.await;
        read
    }

    /// One copy, read through into `sent`, skipping what an earlier copy passed on.
    async fn read_copy(
        &self,
        store: &Store,
        tenant: &str,
        key: &str,
        sent: &mut Sent,
    ) -> Result<([u8; 32], u64), PipelineError> {
        let mut copy = CopyRead::after(&sent.passed);
        let read = self
            .read_copy_into(store, tenant, key, &mut copy, &sent.out)
            .await;
        if read.is_err() && copy.skip.is_none() {
            // What this copy passed on, all of it, for the next copy to match.
            sent.passed = copy.hasher;
        }
        read
    }

    async fn read_copy_into(
        &self,
        store: &Store,
        tenant: &str,
        key: &str,
        copy: &mut CopyRead,
        out: &mpsc::Sender<Bytes>,
    ) -> Result<([u8; 32], u64), PipelineError> {
        let corrupt = |source: SealError| PipelineError::Corrupt {
            key: key.to_string(),
            source,
        };
        let mut stream = store.get_stream(key).await?;
        let mut reader = SealedReader::new();
        let mut opener: Option<(Arc<ChunkCipher>, Decompressor)> = None;
        let mut pending: VecDeque<oneshot::Receiver<Result<Vec<u8>, SealError>>> = VecDeque::new();
        let window = self.config.seal_window;
        let mut eof = false;
        loop {
            if !eof {
                match stream.next().await {
                    Some(piece) => reader.feed(&piece?),
                    None => eof = true,
                }
            }
            if opener.is_none() {
                if let Some(h) = reader.header().map_err(corrupt)? {
                    if h.kek.tenant != tenant {
                        return Err(corrupt(SealError::MalformedHeader(
                            "object belongs to another tenant",
                        )));
                    }
                    let kek = self.key_named(&h.kek).await?;
                    let cipher = ChunkCipher::open(&kek, h, key).map_err(corrupt)?;
                    opener = Some((Arc::new(cipher), Decompressor::new(h.compression)));
                } else if eof {
                    return Err(corrupt(SealError::Truncated));
                } else {
                    continue;
                }
            }
            let (cipher, decomp) = opener.as_mut().expect("opener set above");
            while let Some(c) = reader.next_chunk(eof).map_err(corrupt)? {
                if pending.len() >= window {
                    let plain = pending
                        .pop_front()
                        .expect("non-empty")
                        .await
                        .expect("open task")
                        .map_err(corrupt)?;
                    let data = decompress(decomp, plain, key)?;
                    copy.take(out, data, key).await?;
                }
                pending.push_back(spawn_open(cipher.clone(), c));
            }
            if eof {
                break;
            }
        }
        let (_, mut decomp) = opener.expect("header parsed before eof");
        while let Some(rx) = pending.pop_front() {
            let plain = rx.await.expect("open task").map_err(corrupt)?;
            let data = decompress(&mut decomp, plain, key)?;
            copy.take(out, data, key).await?;
        }
        if !reader.is_done() {
            return Err(corrupt(SealError::Truncated));
        }
        let tail = decomp
            .finish()
            .map_err(|_| corrupt(SealError::MalformedHeader("compressed stream is corrupt")))?;
        copy.take(out, tail, key).await?;
        copy.finish(key)
    }

    /// Reads and opens a job's manifest: from the primary store, or the first replica that
    /// has a good copy when the primary cannot give one.
    pub async fn read_manifest(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<Manifest, PipelineError> {
        let copies = self.copies_for(tenant);
        for (i, store) in copies.iter().enumerate() {
            match self.read_manifest_in(store, tenant, job_id).await {
                Err(e) if i + 1 < copies.len() && another_copy_may_help(&e) => {
                    tracing::warn!(job = job_id, store = store.name(), error = %e, "manifest copy unreadable; trying the next");
                }
                read => return read,
            }
        }
        unreachable!("a tenant has at least its primary store")
    }

    /// Reads and opens the copy of a job's manifest that `store` holds.
    pub async fn read_manifest_in(
        &self,
        store: &Store,
        tenant: &str,
        job_id: &str,
    ) -> Result<Manifest, PipelineError> {
        let key = keys::manifest_key(tenant, job_id);
        let sealed = store.get(&key).await?;
        let corrupt = |source| PipelineError::Corrupt {
            key: key.clone(),
            source,
        };
        let named =
            sealed::Header::parse(&sealed)
                .map_err(corrupt)?
                .ok_or(PipelineError::Corrupt {
                    key: key.clone(),
                    source: SealError::Truncated,
                })?;
        // The header is checked against the tenant before any key is looked up for it.
        if named.kek.tenant != tenant {
            return Err(corrupt(SealError::MalformedHeader(
                "object belongs to another tenant",
            )));
        }
        // Ask the vault directly so that a destroyed key says so, rather than "corrupt".
        let kek = self.key_named(&named.kek).await?;
        let (header, body) = sealed::open_all(&sealed, &key, |_| Some(kek)).map_err(corrupt)?;
        if header.kek.tenant != tenant {
            return Err(corrupt(SealError::MalformedHeader(
                "object belongs to another tenant",
            )));
        }
        Manifest::decode(Bytes::from(body))
            .map_err(|_| corrupt(SealError::MalformedHeader("manifest body is malformed")))
    }
}

fn spawn_open(
    cipher: Arc<ChunkCipher>,
    c: SealedChunk,
) -> oneshot::Receiver<Result<Vec<u8>, SealError>> {
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let mut data = c.data;
        let r = cipher.open_chunk(c.index, c.last, &mut data).map(|_| data);
        let _ = tx.send(r);
    });
    rx
}

/// Whether reading another copy may succeed where this error ended one.
fn another_copy_may_help(e: &PipelineError) -> bool {
    matches!(
        e,
        PipelineError::NotFound(_) | PipelineError::Store(_) | PipelineError::Corrupt { .. }
    )
}

fn decompress(
    decomp: &mut Decompressor,
    plain: Vec<u8>,
    key: &str,
) -> Result<Vec<u8>, PipelineError> {
    decomp.push(plain).map_err(|_| PipelineError::Corrupt {
        key: key.to_string(),
        source: SealError::MalformedHeader("compressed stream is corrupt"),
    })
}

/// What has been passed on to the reader, over every copy tried.
struct Sent {
    out: mpsc::Sender<Bytes>,
    /// The plaintext passed on so far, hashed.
    passed: PageHasher,
}

impl Sent {
    fn new(out: mpsc::Sender<Bytes>) -> Sent {
        Sent {
            out,
            passed: PageHasher::new(),
        }
    }
}

/// One copy's plaintext as it is read: hashed whole, and passed on only past what earlier
/// copies passed on, once its own first bytes are proven to be those. Until then its hash is
/// of the skipped bytes; from then on, of everything passed on.
struct CopyRead {
    hasher: PageHasher,
    /// Bytes an earlier copy passed on, and their SHA-256, still to be matched.
    skip: Option<(u64, [u8; 32])>,
}

impl CopyRead {
    fn after(passed: &PageHasher) -> CopyRead {
        let skip = (!passed.is_empty()).then(|| {
            let (digest, len) = passed.clone().finish();
            (len, digest)
        });
        CopyRead {
            hasher: PageHasher::new(),
            skip,
        }
    }

    async fn take(
        &mut self,
        out: &mpsc::Sender<Bytes>,
        mut data: Vec<u8>,
        key: &str,
    ) -> Result<(), PipelineError> {
        if let Some((skip, digest)) = self.skip {
            let before = (skip - self.hasher.len()).min(data.len() as u64) as usize;
            self.hasher.update(&data[..before]);
            data.drain(..before);
            if self.hasher.len() < skip {
                return Ok(());
            }
            if self.hasher.clone().finish().0 != digest {
                return Err(PipelineError::Corrupt {
                    key: key.to_string(),
                    source: SealError::MalformedHeader(
                        "this copy's plaintext differs from the copy read before it",
                    ),
                });
            }
            self.skip = None;
        }
        if data.is_empty() {
            return Ok(());
        }
        self.hasher.update(&data);
        out.send(Bytes::from(data))
            .await
            .map_err(|_| PipelineError::Abandoned)
    }

    fn finish(&mut self, key: &str) -> Result<([u8; 32], u64), PipelineError> {
        if self.skip.is_some() {
            // Shorter than what the copy before it passed on.
            return Err(PipelineError::Corrupt {
                key: key.to_string(),
                source: SealError::Truncated,
            });
        }
        Ok(std::mem::take(&mut self.hasher).finish())
    }
}
