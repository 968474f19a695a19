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

impl Pipeline {
    /// Streams the plaintext of the object at `key` into `out` and returns its SHA-256 and
    /// length. Fails on any tampering; the caller must compare the digest with the manifest's
    /// before trusting what it passed on.
    pub async fn read_object(
        &self,
        tenant: &str,
        key: &str,
        out: mpsc::Sender<Bytes>,
    ) -> Result<([u8; 32], u64), PipelineError> {
        let corrupt = |source: SealError| PipelineError::Corrupt {
            key: key.to_string(),
            source,
        };
        let mut stream = self.store_for(tenant).get_stream(key).await?;
        let mut reader = SealedReader::new();
        let mut opener: Option<(Arc<ChunkCipher>, Decompressor)> = None;
        let mut hasher = PageHasher::new();
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
                    emit(decomp, &mut hasher, plain, &out, key).await?;
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
            emit(&mut decomp, &mut hasher, plain, &out, key).await?;
        }
        if !reader.is_done() {
            return Err(corrupt(SealError::Truncated));
        }
        let tail = decomp
            .finish()
            .map_err(|_| corrupt(SealError::MalformedHeader("compressed stream is corrupt")))?;
        if !tail.is_empty() {
            hasher.update(&tail);
            out.send(Bytes::from(tail))
                .await
                .map_err(|_| PipelineError::Abandoned)?;
        }
        Ok(hasher.finish())
    }

    /// Reads and opens a job's manifest.
    pub async fn read_manifest(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<Manifest, PipelineError> {
        let key = keys::manifest_key(tenant, job_id);
        let sealed = self.store_for(tenant).get(&key).await?;
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

async fn emit(
    decomp: &mut Decompressor,
    hasher: &mut PageHasher,
    plain: Vec<u8>,
    out: &mpsc::Sender<Bytes>,
    key: &str,
) -> Result<(), PipelineError> {
    let data = decomp.push(plain).map_err(|_| PipelineError::Corrupt {
        key: key.to_string(),
        source: SealError::MalformedHeader("compressed stream is corrupt"),
    })?;
    if data.is_empty() {
        return Ok(());
    }
    hasher.update(&data);
    out.send(Bytes::from(data))
        .await
        .map_err(|_| PipelineError::Abandoned)
}
