//! `quire push`: what a scanner does. Each directory is a job, each regular file a page, in
//! name order. Pages already acknowledged by the server are skipped, so re-running an
//! interrupted push resumes it; a small journal ([`super::journal`]) remembers which job a
//! directory was going to, and which job it was committed as, so that running the same
//! command again never stores a committed directory twice.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use quire_codecs::wire::{self, ErrorCode, Frame, PageEntry, UploadId};
use sha2::{Digest, Sha256};

use super::journal::{self, Journal};
use super::{expect_answer, local_err, ClientError, Connection};
use quire_net::stream::{write_data, write_frame, StreamError};

/// Bytes read from a page file at a time (sent as one or more `Data` frames).
const READ_SIZE: usize = 1024 * 1024;

/// Pieces read ahead of the network per page.
const READ_AHEAD: usize = 4;

/// Reads a page file on one blocking thread and hands its bytes over in pieces of up to
/// `READ_SIZE`, at most `READ_AHEAD` ahead of the sender. One thread hand-off per page, not
/// one per read as with `tokio::fs`, and no copy through an intermediate buffer: the
/// scanner shares its CPU with everything else a fleet host does. Dropping the receiver
/// stops the reading.
fn read_pieces(path: PathBuf) -> tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        loop {
            let mut piece = Vec::with_capacity(READ_SIZE);
            let piece = match (&mut file).take(READ_SIZE as u64).read_to_end(&mut piece) {
                Ok(0) => return,
                Ok(_) => Ok(bytes::Bytes::from(piece)),
                Err(e) => Err(e),
            };
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// A page held in memory, handed over in pieces of up to `READ_SIZE` (slices, not copies).
fn in_pieces(b: bytes::Bytes) -> tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>> {
    let pieces = b.len().div_ceil(READ_SIZE);
    let (tx, rx) = tokio::sync::mpsc::channel(pieces.max(1));
    for i in 0..pieces {
        let piece = b.slice(i * READ_SIZE..((i + 1) * READ_SIZE).min(b.len()));
        tx.try_send(Ok(piece))
            .expect("the channel holds every piece");
    }
    rx
}

/// How a push should run.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Job id to use (only with a single directory); otherwise resumed from the journal or
    /// generated.
    pub job: Option<String>,
    /// Pages in flight at once, each on its own QUIC stream.
    pub concurrency: usize,
    /// Draw progress bars here (only when stderr is a terminal); `None` for no bars.
    pub progress: Option<indicatif::MultiProgress>,
    /// Where the journal of unfinished and committed jobs lives.
    pub state_dir: PathBuf,
    /// Push a directory committed before as a new job instead of skipping it.
    pub again: bool,
    /// Send the targets of symbolic links as pages.
    pub follow_symlinks: bool,
}

/// The result of pushing one directory.
#[derive(Debug, Clone)]
pub struct PushReport {
    pub job_id: String,
    pub pages: u32,
    pub bytes: u64,
    /// Pages the server already held (from an earlier, interrupted run).
    pub skipped: u32,
    pub elapsed: Duration,
    /// The directory was committed before as this job, with the same pages, and was not
    /// pushed again.
    pub already_committed: bool,
}

/// A page to send, hashed: a file, or bytes the caller handed over ([`push_pages`]).
#[derive(Debug, Clone)]
pub struct LocalPage {
    /// The file (for a page in memory, its name: errors name it).
    pub path: PathBuf,
    pub entry: PageEntry,
    /// The page's bytes when it is held in memory; `None` reads `path`.
    pub bytes: Option<bytes::Bytes>,
}

/// What a scan of a job directory found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The pages, hashed, in file-name order.
    pub pages: Vec<LocalPage>,
    /// Entries that are not pages, with the reason each was left out.
    pub skipped: Vec<(PathBuf, &'static str)>,
}

/// Lists and hashes the pages of a job directory, in file-name order, with the defaults of
/// [`scan`]: symbolic links are not followed.
pub fn scan_dir(dir: &Path) -> Result<Vec<LocalPage>, ClientError> {
    scan(dir, false).map(|s| s.pages)
}

/// Lists and hashes the pages of a job directory. A page is a regular file whose name does
/// not start with `.`; hidden files, subdirectories, FIFOs, sockets and devices are skipped
/// and listed in [`Scan::skipped`], and so are symbolic links unless `follow_symlinks` (a
/// link could otherwise send `/etc/passwd` as a page).
pub fn scan(dir: &Path, follow_symlinks: bool) -> Result<Scan, ClientError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| local_err(dir, e))? {
        let item = item.map_err(|e| local_err(dir, e))?;
        let path = item.path();
        let own = std::fs::symlink_metadata(&path).map_err(|e| local_err(&path, e))?;
        let kind = if own.file_type().is_symlink() {
            if !follow_symlinks {
                skipped.push((
                    path,
                    "a symbolic link (--follow-symlinks to send its target)",
                ));
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) => m.file_type(),
                Err(_) => {
                    skipped.push((path, "a symbolic link to nothing"));
                    continue;
                }
            }
        } else {
            own.file_type()
        };
        if item.file_name().as_encoded_bytes().starts_with(b".") {
            skipped.push((path, "a hidden file"));
        } else if kind.is_dir() {
            skipped.push((path, "a subdirectory (push it as a job of its own)"));
        } else if !kind.is_file() {
            skipped.push((path, "not a regular file (FIFO, socket or device)"));
        } else {
            files.push((item.file_name(), path));
        }
    }
    files.sort();
    skipped.sort();
    if files.len() > wire::MAX_PAGES as usize {
        return Err(local_err(
            dir,
            format!("more than {} pages in one job", wire::MAX_PAGES),
        ));
    }
    let mut pages = Vec::with_capacity(files.len());
    for (i, (name, path)) in files.into_iter().enumerate() {
        let name = name
            .into_string()
            .map_err(|_| local_err(&path, "file name is not valid UTF-8"))?;
        wire::validate_page_name(&name).map_err(|e| local_err(&path, e))?;
        let (sha256, size) = hash_file(&path)?;
        pages.push(LocalPage {
            path,
            entry: PageEntry {
                index: i as u32,
                name,
                size,
                sha256,
            },
            bytes: None,
        });
    }
    Ok(Scan { pages, skipped })
}

fn hash_file(path: &Path) -> Result<([u8; 32], u64), ClientError> {
    let mut f = std::fs::File::open(path).map_err(|e| local_err(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| local_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((h.finalize().into(), size))
}

/// A new job id: time-ordered and unique.
pub fn new_job_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).expect("the OS random source failed");
    format!("job-{secs}-{}", hex::encode(r))
}

/// One push of a job: the job id and the upload id binding the job to this push (kept in the
/// journal, so a resume is the same upload; another process pushing the id is refused).
#[derive(Debug, Clone)]
pub struct Upload {
    pub job_id: String,
    pub id: UploadId,
}

impl Upload {
    /// A new upload of `job_id`.
    pub fn new(job_id: impl Into<String>) -> Upload {
        Upload {
            job_id: job_id.into(),
            id: UploadId::random(),
        }
    }
}

/// Pushes one directory as one job. Returns once every page is acknowledged and the job
/// committed; on error, what was acknowledged stays stored and a re-run resumes.
pub async fn push_dir(
    conn: &Connection,
    dir: &Path,
    opts: &PushOptions,
) -> Result<PushReport, ClientError> {
    let started = Instant::now();
    let follow = opts.follow_symlinks;
    let found = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || scan(&dir, follow)
    })
    .await
    .expect("scan task panicked")?;
    for (path, why) in &found.skipped {
        eprintln!("warning: skipped {}: {why}", path.display());
    }
    let pages = found.pages;
    let journal = Journal::open(&opts.state_dir, dir, &conn.tenant, &conn.device_id)?;
    let _lock = journal.lock(dir)?;
    let contents = journal::contents_digest(pages.iter().map(|p| &p.entry));
    if opts.job.is_none() && !opts.again {
        if let Some(done) = journal.committed(&contents)? {
            return Ok(PushReport {
                job_id: done,
                pages: pages.len() as u32,
                bytes: pages.iter().map(|p| p.entry.size).sum(),
                skipped: pages.len() as u32,
                elapsed: started.elapsed(),
                already_committed: true,
            });
        }
    }
    let upload = choose_upload(&journal, opts)?;
    journal.begin(&upload.job_id, upload.id)?;
    let (todo, skipped) = open_job(conn, &upload, &pages).await?;
    let progress = opts.progress.as_ref();
    send_all(
        conn,
        &upload,
        todo,
        skipped,
        pages.len(),
        opts.concurrency,
        progress,
    )
    .await?;
    let (n, bytes) = commit(conn, &upload, pages.len() as u32).await?;
    journal.committed_as(&upload.job_id, &contents)?;
    Ok(PushReport {
        job_id: upload.job_id,
        pages: n,
        bytes,
        skipped,
        elapsed: started.elapsed(),
        already_committed: false,
    })
}

/// Pushes pages the caller holds (a name and a reader each, in page order) as the job of
/// `upload`, and commits it. Each page is read whole into memory first, because its size and
/// SHA-256 are declared before its bytes: for large jobs on disk use [`push_dir`], which
/// reads one page at a time. Nothing is journaled; to resume after an error, call again
/// with the same `upload` (its id, too): pages the server holds are skipped.
pub async fn push_pages<R: Read>(
    conn: &Connection,
    upload: &Upload,
    pages: impl IntoIterator<Item = (String, R)>,
    concurrency: usize,
) -> Result<PushReport, ClientError> {
    let started = Instant::now();
    let mut held = Vec::new();
    for (index, (name, mut reader)) in pages.into_iter().enumerate() {
        wire::validate_page_name(&name).map_err(|e| local_err(Path::new(&name), e))?;
        let mut buf = Vec::new();
        reader
            .read_to_end(&mut buf)
            .map_err(|e| local_err(Path::new(&name), e))?;
        held.push(LocalPage {
            path: PathBuf::from(&name),
            entry: PageEntry {
                index: index as u32,
                name,
                size: buf.len() as u64,
                sha256: Sha256::digest(&buf).into(),
            },
            bytes: Some(buf.into()),
        });
    }
    let (todo, skipped) = open_job(conn, upload, &held).await?;
    send_all(conn, upload, todo, skipped, held.len(), concurrency, None).await?;
    let (pages, bytes) = commit(conn, upload, held.len() as u32).await?;
    Ok(PushReport {
        job_id: upload.job_id.clone(),
        pages,
        bytes,
        skipped,
        elapsed: started.elapsed(),
        already_committed: false,
    })
}

/// The job and upload this push is: `--job`, else the journal's unfinished job, else a new
/// id. Resuming the journal's job is the same upload; anything else is a new one.
fn choose_upload(journal: &Journal, opts: &PushOptions) -> Result<Upload, ClientError> {
    let resumed = journal.unfinished()?;
    let job_id = match &opts.job {
        Some(j) => {
            wire::validate_job_id(j).map_err(|e| local_err(Path::new("--job"), e))?;
            j.clone()
        }
        None => resumed
            .as_ref()
            .map_or_else(new_job_id, |r| r.job_id.clone()),
    };
    Ok(match resumed {
        Some(journal::Unfinished {
            job_id: ref j,
            upload: Some(id),
        }) if *j == job_id => Upload { job_id, id },
        _ => Upload::new(job_id),
    })
}

/// Opens the job on the server and returns the pages it does not hold yet, and how many it
/// does. A page the server holds with other contents means the directory changed.
async fn open_job(
    conn: &Connection,
    upload: &Upload,
    pages: &[LocalPage],
) -> Result<(Vec<LocalPage>, u32), ClientError> {
    let job_id = &upload.job_id;
    let status = conn
        .call(&Frame::JobOpen {
            tenant: conn.tenant.clone(),
            job_id: job_id.clone(),
            upload: Some(upload.id),
        })
        .await?;
    let Frame::JobStatus {
        committed,
        pages: stored,
    } = status
    else {
        return Err(ClientError::Protocol(format!(
            "expected JobStatus, got {status:?}"
        )));
    };
    let mut todo = Vec::new();
    let mut skipped = 0u32;
    for p in pages {
        match stored.iter().find(|s| s.index == p.entry.index) {
            Some(s) if s.sha256 == p.entry.sha256 && s.size == p.entry.size => skipped += 1,
            Some(_) => {
                return Err(local_err(
                    &p.path,
                    format!("job {job_id} already holds a different page {} here; the directory changed since it was pushed", p.entry.index),
                ))
            }
            None => todo.push(p.clone()),
        }
    }
    if committed && !todo.is_empty() {
        return Err(ClientError::Refused {
            code: ErrorCode::Conflict,
            message: format!("job {job_id} is already committed with other pages"),
        });
    }
    Ok((todo, skipped))
}

/// A progress bar over `total_bytes` when stderr is a terminal and bars were asked for.
fn progress_bar(
    progress: Option<&indicatif::MultiProgress>,
    total_bytes: u64,
    message: String,
) -> ProgressBar {
    let Some(multi) = progress.filter(|_| std::io::stderr().is_terminal()) else {
        return ProgressBar::hidden();
    };
    let b = multi.add(ProgressBar::new(total_bytes));
    b.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_message(message);
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// Sends `todo` on up to `concurrency` streams at once, with a bar in `progress` if given;
/// the first error, if any.
async fn send_all(
    conn: &Connection,
    upload: &Upload,
    todo: Vec<LocalPage>,
    skipped: u32,
    page_total: usize,
    concurrency: usize,
    progress: Option<&indicatif::MultiProgress>,
) -> Result<(), ClientError> {
    let job_id = &upload.job_id;
    let total_bytes: u64 = todo.iter().map(|p| p.entry.size).sum();
    let tty = std::io::stderr().is_terminal();
    let bar = progress_bar(
        progress,
        total_bytes,
        format!("{job_id} pages {skipped}/{page_total}"),
    );
    let done = Arc::new(std::sync::atomic::AtomicU32::new(skipped));
    let results: Vec<Result<(), ClientError>> = stream::iter(todo)
        .map(|p| {
            let (bar, done) = (bar.clone(), done.clone());
            async move {
                let r = send_with_retry(conn, upload, &p, &bar).await;
                if r.is_ok() {
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    bar.set_message(format!("{job_id} pages {n}/{page_total}"));
                    if !tty {
                        eprintln!("stored page {n}/{page_total} of {job_id}: {}", p.entry.name);
                    }
                }
                r
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    results.into_iter().collect()
}

/// Sends one page; a rate limit, a full spool or a store that did not answer in time is a
/// "later", not a "no": back off and retry. A refusal names the page.
async fn send_with_retry(
    conn: &Connection,
    upload: &Upload,
    p: &LocalPage,
    bar: &ProgressBar,
) -> Result<(), ClientError> {
    let mut r = send_page(conn, upload, p, bar).await;
    let delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(16))
        .with_jitter()
        .with_max_times(6)
        .build();
    for backoff in delays {
        match &r {
            Err(e)
                if matches!(
                    e.code(),
                    Some(
                        ErrorCode::LimitExceeded
                            | ErrorCode::Busy
                            | ErrorCode::ServerFull
                            | ErrorCode::StoreUnavailable
                    )
                ) =>
            {
                eprintln!(
                    "page {} ({}): {e}; retrying in {backoff:?}",
                    p.entry.index, p.entry.name
                );
                tokio::time::sleep(backoff).await;
                r = send_page(conn, upload, p, bar).await;
            }
            _ => break,
        }
    }
    r.map_err(|e| match e {
        ClientError::Refused { code, message } => ClientError::Refused {
            code,
            message: format!("page {} ({}): {message}", p.entry.index, p.entry.name),
        },
        other => other,
    })
}

/// Commits the job: pages and bytes the server recorded.
async fn commit(
    conn: &Connection,
    upload: &Upload,
    page_count: u32,
) -> Result<(u32, u64), ClientError> {
    let committed = conn
        .call(&Frame::JobCommit {
            tenant: conn.tenant.clone(),
            job_id: upload.job_id.clone(),
            page_count,
            upload: Some(upload.id),
        })
        .await?;
    match committed {
        Frame::JobCommitted { pages, bytes } => Ok((pages, bytes)),
        other => Err(ClientError::Protocol(format!(
            "expected JobCommitted, got {other:?}"
        ))),
    }
}

/// Streams one page and waits for its acknowledgement.
pub async fn send_page(
    conn: &Connection,
    upload: &Upload,
    page: &LocalPage,
    bar: &ProgressBar,
) -> Result<(), ClientError> {
    let (mut send, mut reader) = conn
        .open(&Frame::PagePut {
            tenant: conn.tenant.clone(),
            job_id: upload.job_id.clone(),
            page: page.entry.clone(),
            upload: Some(upload.id),
        })
        .await?;
    let mut pieces = match &page.bytes {
        Some(b) => in_pieces(b.clone()),
        None => read_pieces(page.path.clone()),
    };
    let written = async {
        while let Some(piece) = pieces.recv().await {
            let piece = piece.map_err(|e| local_err(&page.path, e))?;
            let n = piece.len();
            write_data(&mut send, piece).await?;
            bar.inc(n as u64);
        }
        write_frame(&mut send, &Frame::PageEnd).await?;
        let _ = send.finish();
        Ok::<(), ClientError>(())
    }
    .await;
    match written {
        Ok(()) => {}
        // The server stopped reading: it already has the page, or refused it. Its answer says which.
        Err(ClientError::Stream(StreamError::Write(quinn::WriteError::Stopped(_)))) => {}
        Err(e) => return Err(e),
    }
    match expect_answer(&mut reader).await? {
        Frame::PageStored { index, sha256 }
            if index == page.entry.index && sha256 == page.entry.sha256 =>
        {
            Ok(())
        }
        other => Err(ClientError::Protocol(format!(
            "expected PageStored for page {}, got {other:?}",
            page.entry.index
        ))),
    }
}
