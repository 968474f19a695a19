//! Writing one spool record: the body, then its commit record, both fsync'd when durable.

use super::*;

/// Writes one record. Dropped without [`RecordWriter::commit`], it erases what it wrote and
/// gives back its reservation and its place in the epoch.
#[derive(Debug)]
pub struct RecordWriter {
    pub(super) spool: Arc<Spool>,
    pub(super) spool_dir: PathBuf,
    pub(super) name: String,
    pub(super) epoch: Option<Arc<Epoch>>,
    pub(super) meta: RecordMeta,
    pub(super) out: Option<BufWriter<fs::File>>,
    pub(super) chunker: Chunker,
    pub(super) cipher: ChunkCipher,
    pub(super) hasher: Sha256,
    pub(super) written: u64,
    pub(super) reserved: u64,
    pub(super) durable: bool,
}

/// A record whose files are complete.
#[derive(Debug)]
pub(super) struct CommittedRecord {
    pub(super) name: String,
    pub(super) epoch: Arc<Epoch>,
    pub(super) meta: RecordMeta,
    pub(super) reserved: u64,
}

impl RecordWriter {
    fn body_path(&self) -> PathBuf {
        self.spool_dir.join(format!("{}.body", self.name))
    }

    /// Appends the next bytes of the tenant-sealed object.
    pub fn write(&mut self, sealed_bytes: &[u8]) -> Result<(), SpoolError> {
        self.hasher.update(sealed_bytes);
        self.written += sealed_bytes.len() as u64;
        for mut c in self.chunker.push(sealed_bytes) {
            self.cipher.seal_chunk(c.index, c.last, &mut c.data);
            let path = self.body_path();
            self.out
                .as_mut()
                .expect("open until commit")
                .write_all(&c.data)
                .map_err(io(&path))?;
        }
        Ok(())
    }

    /// Names the plaintext's SHA-256 when it was not known as the record began (a scanner
    /// declared it after the page's bytes).
    pub fn set_plain_sha256(&mut self, plain_sha256: [u8; 32]) {
        self.meta.plain_sha256 = hex::encode(plain_sha256);
    }

    /// Finishes the body, writes the commit record and queues the record for delivery; with
    /// `durable`, both files (and the directory) are fsync'd before this returns. If a record
    /// for the same object is already waiting, that one is returned and this one erased.
    pub fn commit(mut self) -> Result<Arc<Record>, SpoolError> {
        let path = self.body_path();
        let chunker = std::mem::replace(&mut self.chunker, Chunker::new(DEFAULT_CHUNK_SIZE));
        let mut last = chunker.finish();
        self.cipher
            .seal_chunk(last.index, last.last, &mut last.data);
        let mut out = self.out.take().expect("open until commit");
        out.write_all(&last.data).map_err(io(&path))?;
        let file = out.into_inner().map_err(|e| io(&path)(e.into_error()))?;
        if self.durable {
            file.sync_all().map_err(io(&path))?;
        }
        drop(file);
        self.meta.sealed_sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        self.meta.sealed_size = self.written;
        let epoch = self.epoch.clone().expect("present until commit or drop");
        let json = self.meta.encode();
        let sealed_meta = sealed::seal_all(
            &epoch.key,
            epoch.kek_ref(),
            &format!("spool/{}/meta", self.name),
            Compression::None,
            DEFAULT_CHUNK_SIZE,
            &json,
        );
        let tmp = self.spool_dir.join(format!("{}.meta.tmp", self.name));
        let meta_path = self.spool_dir.join(format!("{}.meta", self.name));
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&sealed_meta).map_err(io(&tmp))?;
        if self.durable {
            f.sync_all().map_err(io(&tmp))?;
        }
        drop(f);
        fs::rename(&tmp, &meta_path).map_err(io(&meta_path))?;
        if self.durable {
            fs::File::open(&self.spool_dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.spool_dir))?;
        }
        let committed = CommittedRecord {
            name: self.name.clone(),
            epoch: self.epoch.take().expect("present"),
            meta: self.meta.clone(),
            reserved: self.reserved,
        };
        self.reserved = 0;
        Ok(self.spool.enqueue(committed))
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        if let Some(epoch) = self.epoch.take() {
            self.out = None;
            let _ = fs::remove_file(self.body_path());
            let _ = fs::remove_file(self.spool_dir.join(format!("{}.meta.tmp", self.name)));
            self.spool.give_up_epoch(&epoch);
            self.spool.release_space(&self.meta.tenant, self.reserved);
        }
    }
}
