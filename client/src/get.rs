//! `quire get`: fetch a job's pages back, decrypted by the server, and verify every byte
//! against the job manifest before it takes its final name.

use std::path::{Path, PathBuf};

use quire_codecs::wire::{self, Frame, PageEntry};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{local_err, ClientError, Connection};

/// What `get` wrote.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub entry: PageEntry,
    pub path: PathBuf,
}

/// Fetches all pages of `job_id` (or only `page`) of the connection's tenant into `out_dir`,
/// named as pushed.
pub async fn get_job(
    conn: &Connection,
    job_id: &str,
    page: Option<u32>,
    out_dir: &Path,
) -> Result<Vec<Fetched>, ClientError> {
    let tenant = conn.tenant.clone();
    get_job_for(conn, &tenant, job_id, page, "", out_dir).await
}

/// Like [`get_job`], for `tenant` and with a stated `reason`: how an operator or a support
/// partner with an active grant reads a document (the reason is audited).
pub async fn get_job_for(
    conn: &Connection,
    tenant: &str,
    job_id: &str,
    page: Option<u32>,
    reason: &str,
    out_dir: &Path,
) -> Result<Vec<Fetched>, ClientError> {
    wire::validate_job_id(job_id).map_err(|e| local_err(Path::new("--job"), e))?;
    tokio::fs::create_dir_all(out_dir)
        .await
        .map_err(|e| local_err(out_dir, e))?;
    let (mut send, mut reader) = conn
        .open(&Frame::JobGet {
            tenant: tenant.to_string(),
            job_id: job_id.to_string(),
            page,
            reason: reason.to_string(),
        })
        .await?;
    let _ = send.finish();
    let mut current: Option<Partial> = None;
    let result = receive(&mut reader, out_dir, &mut current).await;
    if result.is_err() {
        // Never leave unverified plaintext behind, whatever failed.
        if let Some((_, f, tmp, _, _)) = current.take() {
            drop(f);
            let _ = tokio::fs::remove_file(&tmp).await;
        }
    }
    result
}

/// The page being received: entry, file, its temporary path, running digest and length.
type Partial = (PageEntry, tokio::fs::File, PathBuf, Sha256, u64);

async fn receive(
    reader: &mut quire_net::stream::FrameReader,
    out_dir: &Path,
    current: &mut Option<Partial>,
) -> Result<Vec<Fetched>, ClientError> {
    let mut fetched = Vec::new();
    let mut manifest: Option<Vec<PageEntry>> = None;
    loop {
        let frame = super::expect_answer(reader).await?;
        match frame {
            Frame::Manifest { pages, .. } if manifest.is_none() => manifest = Some(pages),
            Frame::PageBegin(entry) if current.is_none() => {
                // Each page is checked against the manifest, not only against its own header.
                let listed = manifest
                    .as_ref()
                    .and_then(|m| m.get(entry.index as usize))
                    .is_some_and(|m| *m == entry);
                if !listed {
                    return Err(ClientError::Protocol(format!(
                        "page {} ({}) is not in the job's manifest as sent",
                        entry.index, entry.name
                    )));
                }
                // The name comes from the server: check it cannot point outside out_dir.
                wire::validate_page_name(&entry.name)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let tmp = out_dir.join(format!(".quire-get-{}.part", entry.index));
                let f = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| local_err(&tmp, e))?;
                *current = Some((entry, f, tmp, Sha256::new(), 0));
            }
            Frame::Data(b) => {
                let Some((_, f, tmp, h, n)) = current.as_mut() else {
                    return Err(ClientError::Protocol("Data outside a page".into()));
                };
                h.update(&b);
                *n += b.len() as u64;
                f.write_all(&b).await.map_err(|e| local_err(tmp, e))?;
            }
            Frame::PageEnd => {
                let Some((entry, f, tmp, h, n)) = current.take() else {
                    return Err(ClientError::Protocol("PageEnd outside a page".into()));
                };
                match finish_page(&entry, f, &tmp, h, n, out_dir).await {
                    Ok(path) => fetched.push(Fetched { entry, path }),
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(e);
                    }
                }
            }
            Frame::Done if current.is_none() => return Ok(fetched),
            other => return Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }
}

/// Syncs a received page, verifies it against its manifest entry and gives it its name.
async fn finish_page(
    entry: &PageEntry,
    mut f: tokio::fs::File,
    tmp: &Path,
    h: Sha256,
    n: u64,
    out_dir: &Path,
) -> Result<PathBuf, ClientError> {
    f.flush().await.map_err(|e| local_err(tmp, e))?;
    f.sync_all().await.map_err(|e| local_err(tmp, e))?;
    drop(f);
    let digest: [u8; 32] = h.finalize().into();
    if digest != entry.sha256 || n != entry.size {
        return Err(ClientError::Protocol(format!(
            "page {} ({}) failed verification: got {n} bytes with SHA-256 {}, manifest says {} bytes with {}",
            entry.index,
            entry.name,
            hex::encode(digest),
            entry.size,
            hex::encode(entry.sha256)
        )));
    }
    let path = out_dir.join(&entry.name);
    tokio::fs::rename(tmp, &path)
        .await
        .map_err(|e| local_err(&path, e))?;
    Ok(path)
}
