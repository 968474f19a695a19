//! Sending one page: its bytes from its file (read once, on one blocking thread, and hashed
//! on the way when the digest goes after them) or from memory, then the server's answer.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use indicatif::ProgressBar;
use quire_codecs::wire::{ErrorCode, Frame};
use quire_net::stream::{write_data, write_frame, StreamError};
use sha2::{Digest, Sha256};

use super::buffers::Buffers;
use super::{LocalPage, Upload};
use crate::{expect_answer, local_err, ClientError, Connection};

/// Bytes read from a page file at a time (sent as one or more `Data` frames).
const READ_SIZE: usize = super::buffers::LARGEST;

/// Pieces read ahead of the network per page.
const READ_AHEAD: usize = 4;

/// What the reader of a page hands the sender.
enum Piece {
    Bytes(Bytes),
    /// The SHA-256 of every byte handed over (after the last, when asked for).
    Digest([u8; 32]),
}

/// Reads exactly `size` bytes of a page file on one blocking thread and hands them over in
/// pieces of up to `READ_SIZE`, at most `READ_AHEAD` ahead of the sender, hashing them on
/// the way when `hash` (then the digest comes last). One thread hand-off per page, not one
/// per read as with `tokio::fs`, and no copy through an intermediate buffer: the scanner
/// shares its CPU with everything else a fleet host does. A file that grew or shrank since
/// it was listed is an error, not another page. Dropping the receiver stops the reading.
fn read_pieces(
    path: PathBuf,
    size: u64,
    hash: bool,
    buffers: Arc<Buffers>,
) -> tokio::sync::mpsc::Receiver<std::io::Result<Piece>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let send = |piece| tx.blocking_send(piece).is_ok();
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return send(Err(e)),
        };
        let mut hasher = hash.then(Sha256::new);
        let mut left = size;
        while left > 0 {
            let want = left.min(READ_SIZE as u64);
            let mut piece = buffers.take(want as usize);
            match (&mut file).take(want).read_to_end(&mut piece) {
                Ok(0) => return send(Err(changed(size, "shrank", size - left))),
                Ok(n) => left -= n as u64,
                Err(e) => return send(Err(e)),
            }
            if let Some(h) = &mut hasher {
                h.update(&piece);
            }
            if !send(Ok(Piece::Bytes(Buffers::freeze(&buffers, piece)))) {
                return false;
            }
        }
        match file.read(&mut [0u8; 1]) {
            Ok(0) => {}
            Ok(_) => return send(Err(changed(size, "grew", size + 1))),
            Err(e) => return send(Err(e)),
        }
        match hasher {
            Some(h) => send(Ok(Piece::Digest(h.finalize().into()))),
            None => true,
        }
    });
    rx
}

fn changed(listed: u64, how: &str, now: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "the file {how} while it was being sent ({listed} bytes when listed, {}{now} now); \
         let whatever writes it finish, then push again",
        if how == "grew" { "at least " } else { "" }
    ))
}

/// A page held in memory, handed over in pieces of up to `READ_SIZE` (slices, not copies).
fn in_pieces(b: Bytes) -> tokio::sync::mpsc::Receiver<std::io::Result<Piece>> {
    let pieces = b.len().div_ceil(READ_SIZE);
    let (tx, rx) = tokio::sync::mpsc::channel(pieces.max(1));
    for i in 0..pieces {
        let piece = b.slice(i * READ_SIZE..((i + 1) * READ_SIZE).min(b.len()));
        tx.try_send(Ok(Piece::Bytes(piece)))
            .expect("the channel holds every piece");
    }
    rx
}

/// Streams one page and waits for its acknowledgement; returns the SHA-256 the server
/// acknowledged it with. A page file not hashed yet is hashed while it is sent, its digest
/// after its bytes (`PagePutDigestAfter`), so it is read once; a server older than that
/// frame gets the page hashed first, and the connection remembers it.
pub async fn send_page(
    conn: &Connection,
    upload: &Upload,
    page: &LocalPage,
    bar: &ProgressBar,
) -> Result<[u8; 32], ClientError> {
    let digest_after = !page.hashed && page.bytes.is_none();
    if digest_after && !conn.digest_after_refused.load(Ordering::Relaxed) {
        let began = bar.position();
        match send(conn, upload, page, bar).await {
            Err(ClientError::Refused {
                code: ErrorCode::Malformed,
                ..
            }) => {
                conn.digest_after_refused.store(true, Ordering::Relaxed);
                bar.set_position(began);
            }
            other => return other,
        }
    }
    if page.hashed {
        return send(conn, upload, page, bar).await;
    }
    let mut hashed = page.clone();
    let hashed = tokio::task::spawn_blocking(move || hashed.hash().map(|()| hashed))
        .await
        .expect("hashing task panicked")?;
    send(conn, upload, &hashed, bar).await
}

/// One attempt: `PagePut` (digest first) for a hashed page, else `PagePutDigestAfter`.
async fn send(
    conn: &Connection,
    upload: &Upload,
    page: &LocalPage,
    bar: &ProgressBar,
) -> Result<[u8; 32], ClientError> {
    let (tenant, job_id) = (conn.tenant.clone(), upload.job_id.clone());
    let e = &page.entry;
    let first = match page.hashed {
        true => Frame::PagePut {
            tenant,
            job_id,
            page: e.clone(),
            upload: Some(upload.id),
        },
        false => Frame::PagePutDigestAfter {
            tenant,
            job_id,
            index: e.index,
            name: e.name.clone(),
            size: e.size,
            upload: upload.id,
        },
    };
    let (mut send, mut reader) = conn.open(&first).await?;
    let mut pieces = match &page.bytes {
        Some(b) => in_pieces(b.clone()),
        None => read_pieces(
            page.path.clone(),
            e.size,
            !page.hashed,
            conn.buffers.clone(),
        ),
    };
    let written = async {
        let mut end = Frame::PageEnd;
        while let Some(piece) = pieces.recv().await {
            match piece.map_err(|e| local_err(&page.path, e))? {
                Piece::Bytes(b) => {
                    let n = b.len();
                    write_data(&mut send, b).await?;
                    bar.inc(n as u64);
                }
                Piece::Digest(d) => end = Frame::PageEndDigest(d),
            }
        }
        if !page.hashed && matches!(end, Frame::PageEnd) {
            return Err(ClientError::Protocol(
                "the page's reader ended without its digest".into(),
            ));
        }
        write_frame(&mut send, &end).await?;
        let _ = send.finish();
        Ok::<Frame, ClientError>(end)
    }
    .await;
    let sent_digest = match written {
        Ok(Frame::PageEndDigest(d)) => Some(d),
        Ok(_) => Some(e.sha256),
        // The server stopped reading: it already has the page, or refused it. Its answer
        // says which.
        Err(ClientError::Stream(StreamError::Write(quinn::WriteError::Stopped(_)))) => None,
        Err(e) => return Err(e),
    };
    // The digest acknowledged must be the one sent: a hashed page's, or the one computed
    // while sending (all of it: a server that stopped reading such a page early cannot
    // have stored it).
    let acknowledged = |sha256: &[u8; 32]| match (page.hashed, sent_digest) {
        (true, _) => *sha256 == e.sha256,
        (false, Some(d)) => *sha256 == d,
        (false, None) => false,
    };
    match expect_answer(&mut reader).await? {
        Frame::PageStored { index, sha256 } if index == e.index && acknowledged(&sha256) => {
            Ok(sha256)
        }
        other => Err(ClientError::Protocol(format!(
            "expected PageStored for page {}, got {other:?}",
            e.index
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(
        path: &std::path::Path,
        size: u64,
        buffers: &Arc<Buffers>,
    ) -> (Vec<u8>, [u8; 32]) {
        let mut rx = read_pieces(path.to_path_buf(), size, true, buffers.clone());
        let (mut bytes, mut pieces, mut digest) = (Vec::new(), Vec::new(), None);
        while let Some(piece) = rx.recv().await {
            match piece.expect("read") {
                Piece::Bytes(b) => {
                    bytes.extend_from_slice(&b);
                    pieces.push(b);
                }
                Piece::Digest(d) => digest = Some(d),
            }
        }
        assert_eq!(
            buffers.idle_bytes(),
            0,
            "every buffer is out while its piece lives"
        );
        drop(pieces);
        (bytes, digest.expect("a digest after the bytes"))
    }

    /// The pieces of a page file come back whole and hashed, and once the last reference to
    /// them is dropped (the server acknowledged them) the next page is read into their buffers.
    #[tokio::test]
    async fn a_page_file_is_read_into_the_buffers_its_connection_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page.tif");
        let page: Vec<u8> = (0..READ_SIZE * 3 + 300_000)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &page).unwrap();
        let buffers = Arc::new(Buffers::default());

        let (bytes, digest) = read_all(&path, page.len() as u64, &buffers).await;
        assert!(bytes == page);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&page)));
        let kept = 3 * READ_SIZE + 512 * 1024;
        assert_eq!(buffers.idle_bytes(), kept);

        let (again, _) = read_all(&path, page.len() as u64, &buffers).await;
        assert!(again == page, "a reused buffer holds only the new piece");
        assert_eq!(buffers.idle_bytes(), kept, "no new buffer was needed");
    }
}
