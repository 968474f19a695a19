//! Key rotation for stored objects: re-wrap every data key of a tenant under its newest KEK.
//! Only headers change; bodies are copied byte for byte, never decrypted.

use futures::StreamExt;
use quire_codecs::sealed::{Header, SealError, MAX_HEADER_LEN};

use quire_storage::Store;

use crate::{keys, Pipeline, PipelineError};

/// What a re-wrap pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RewrapReport {
    /// The KEK version every object is now wrapped under.
    pub version: u32,
    /// Objects whose header was rewritten.
    pub rewrapped: u64,
    /// Objects already under the newest version.
    pub current: u64,
}

/// The start of a stored object: its parsed header, the bytes read so far (header and the
/// beginning of the body) and the rest of the body still to read.
struct Head {
    header: Header,
    read: Vec<u8>,
    rest: futures::stream::BoxStream<'static, Result<bytes::Bytes, quire_storage::StoreError>>,
}

impl Pipeline {
    /// Reads just enough of `key` in `store` to parse its header.
    async fn read_head(&self, store: &Store, key: &str) -> Result<Head, PipelineError> {
        let corrupt = |source| PipelineError::Corrupt {
            key: key.to_string(),
            source,
        };
        let mut rest = store.get_stream(key).await?;
        let mut read = Vec::new();
        let header = loop {
            match Header::parse(&read).map_err(corrupt)? {
                Some(h) => break h,
                None if read.len() > MAX_HEADER_LEN => return Err(corrupt(SealError::Truncated)),
                None => match rest.next().await {
                    Some(piece) => read.extend_from_slice(&piece?),
                    None => return Err(corrupt(SealError::Truncated)),
                },
            }
        };
        Ok(Head { header, read, rest })
    }

    /// Re-wraps the data key of every object of `tenant` that is not under its newest KEK,
    /// in the primary store and every replica (each copy's header separately; bodies are
    /// not touched). Safe to interrupt and run again: each object is replaced atomically.
    pub async fn rewrap_tenant(&self, tenant: &str) -> Result<RewrapReport, PipelineError> {
        let (new_ref, new_kek) = self.current_key(tenant).await?;
        let mut report = RewrapReport {
            version: new_ref.version,
            ..RewrapReport::default()
        };
        for store in self.copies_for(tenant) {
            for obj in store.list(&keys::tenant_prefix(tenant)).await? {
                let Head {
                    header,
                    read,
                    mut rest,
                } = self.read_head(store, &obj.key).await?;
                if header.kek == new_ref {
                    report.current += 1;
                    continue;
                }
                let old_kek = self.key_named(&header.kek).await?;
                let fresh =
                    header
                        .rewrap(&old_kek, &new_kek, new_ref.clone())
                        .map_err(|source| PipelineError::Corrupt {
                            key: obj.key.clone(),
                            source,
                        })?;
                let mut up = store.begin_replace(&obj.key).await?;
                let body_start = header.encoded().len();
                up.write(bytes::Bytes::copy_from_slice(fresh.encoded()))
                    .await?;
                up.write(bytes::Bytes::copy_from_slice(&read[body_start..]))
                    .await?;
                while let Some(piece) = rest.next().await {
                    up.write(piece?).await?;
                }
                up.finish().await?;
                report.rewrapped += 1;
            }
        }
        Ok(report)
    }

    /// How many stored objects of `tenant` have their data key wrapped under key `version`,
    /// counting every copy: a version may be retired only when none is.
    /// Records still in the spool count too: they were sealed before they were stored, so
    /// they may be under any version.
    pub async fn objects_under_key(
        &self,
        tenant: &str,
        version: u32,
    ) -> Result<u64, PipelineError> {
        let mut count = self.spool.pending_under(&keys::tenant_prefix(tenant)) as u64;
        for store in self.copies_for(tenant) {
            for obj in store.list(&keys::tenant_prefix(tenant)).await? {
                let head = self.read_head(store, &obj.key).await?;
                if head.header.kek.tenant == tenant && head.header.kek.version == version {
                    count += 1;
                }
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {

    use quire_codecs::manifest::Manifest;
    use quire_codecs::wire::PageEntry;
    use tokio::sync::mpsc;

    use crate::hash::sha256;
    use crate::{PageInput, Pipeline, PipelineConfig, PipelineError, VaultError};

    async fn store_page(p: &Pipeline, job: &str, data: &[u8]) -> String {
        let (tx, rx) = mpsc::channel(4);
        tx.send(PageInput::Data(bytes::Bytes::copy_from_slice(data)))
            .await
            .unwrap();
        tx.send(PageInput::End(None)).await.unwrap();
        let entry = PageEntry {
            index: 0,
            name: "p".into(),
            size: data.len() as u64,
            sha256: sha256(data),
        };
        p.ingest_page("acme", job, entry.clone(), rx).await.unwrap();
        p.write_manifest(
            "acme",
            &Manifest {
                job_id: job.into(),
                pages: vec![entry],
                seal: None,
            },
        )
        .await
        .unwrap();
        crate::keys::page_key("acme", job, 0)
    }

    async fn read(p: &Pipeline, key: &str) -> Result<Vec<u8>, PipelineError> {
        let (v, read) = crate::read_plain(p, "acme", key).await;
        read.map(|_| v)
    }

    #[tokio::test]
    async fn rotate_rewrap_then_shred() {
        let dir = tempfile::tempdir().unwrap();
        let p = crate::test_pipeline(dir.path(), PipelineConfig::default());
        let vault = p.vault.clone();
        let old_key = store_page(&p, "j1", &b"old page ".repeat(50_000)).await;
        assert_eq!(vault.rotate("acme").unwrap(), 2);
        let new_key = store_page(&p, "j2", b"new page").await;

        // Both versions open after rotation.
        assert_eq!(
            read(&p, &old_key).await.unwrap(),
            b"old page ".repeat(50_000)
        );
        assert_eq!(read(&p, &new_key).await.unwrap(), b"new page");

        // Re-wrap moves the old page and manifest to version 2 without touching the bodies.
        let before = p.store.get(&old_key).await.unwrap();
        let r = p.rewrap_tenant("acme").await.unwrap();
        assert_eq!((r.version, r.rewrapped, r.current), (2, 2, 2));
        let after = p.store.get(&old_key).await.unwrap();
        let hb = quire_codecs::sealed::Header::parse(&before)
            .unwrap()
            .unwrap();
        let ha = quire_codecs::sealed::Header::parse(&after)
            .unwrap()
            .unwrap();
        assert_eq!(ha.kek.version, 2);
        assert_eq!(
            before[hb.encoded().len()..],
            after[ha.encoded().len()..],
            "body unchanged"
        );
        assert_eq!(
            read(&p, &old_key).await.unwrap(),
            b"old page ".repeat(50_000)
        );
        assert_eq!(p.rewrap_tenant("acme").await.unwrap().rewrapped, 0);

        // Crypto-shredding: nothing written before opens any more.
        vault.shred("acme").unwrap();
        for key in [&old_key, &new_key] {
            assert!(matches!(
                read(&p, key).await,
                Err(PipelineError::Vault(VaultError::Shredded(_)))
            ));
        }
        assert!(matches!(
            p.read_manifest("acme", "j1").await,
            Err(PipelineError::Vault(VaultError::Shredded(_)))
        ));
    }
}
