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
use super::{local_err, ClientError, Connection};

pub(crate) mod buffers;
pub mod gate;
mod scan;
mod send;

pub use scan::{hash_pages, scan, scan_dir, LocalPage, Scan};
pub use send::send_page;

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
    let mut pages = found.pages;
    let journal = Journal::open(&opts.state_dir, dir, &conn.tenant, &conn.device_id)?;
    let _lock = journal.lock(dir)?;
    // Only a directory this journal saw committed can be committed already: its pages are
    // hashed first, to compare. Any other is read once, hashed while it is sent.
    if opts.job.is_none() && !opts.again && journal.remembers_commits() {
        pages = hashed(pages, |_| true).await?;
        let contents = journal::contents_digest(pages.iter().map(|p| &p.entry));
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
    let (mut pages, todo, skipped) = open_job(conn, &upload, pages).await?;
    let progress = opts.progress.as_ref();
    let sent = send_all(
        conn,
        &upload,
        todo,
        skipped,
        pages.len(),
        opts.concurrency,
        progress,
    )
    .await?;
    for (index, sha256) in sent {
        let page = &mut pages[index as usize];
        (page.entry.sha256, page.hashed) = (sha256, true);
    }
    let contents = journal::contents_digest(pages.iter().map(|p| &p.entry));
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
            hashed: true,
            bytes: Some(buf.into()),
        });
    }
    let (held, todo, skipped) = open_job(conn, upload, held).await?;
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

/// Hashes the pages `which` selects (those not hashed yet), on a blocking thread.
async fn hashed(
    mut pages: Vec<LocalPage>,
    which: impl Fn(&LocalPage) -> bool + Send + 'static,
) -> Result<Vec<LocalPage>, ClientError> {
    tokio::task::spawn_blocking(move || {
        pages
            .iter_mut()
            .filter(|p| which(p))
            .try_for_each(LocalPage::hash)
            .map(|()| pages)
    })
    .await
    .expect("hashing task panicked")
}

/// Opens the job on the server and returns the pages (those it holds now hashed, to
/// compare), the pages it does not hold yet, and how many it does. A page the server holds
/// with other contents means the directory changed.
async fn open_job(
    conn: &Connection,
    upload: &Upload,
    pages: Vec<LocalPage>,
) -> Result<(Vec<LocalPage>, Vec<LocalPage>, u32), ClientError> {
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
    let stored: std::collections::HashMap<u32, &PageEntry> =
        stored.iter().map(|s| (s.index, s)).collect();
    let mut pages = pages;
    if !stored.is_empty() {
        let held: std::collections::HashSet<u32> = stored.keys().copied().collect();
        pages = hashed(pages, move |p| held.contains(&p.entry.index)).await?;
    }
    let mut todo = Vec::new();
    let mut skipped = 0u32;
    for p in &pages {
        match stored.get(&p.entry.index) {
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
    Ok((pages, todo, skipped))
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
/// the index and acknowledged SHA-256 of each page, or the first error.
async fn send_all(
    conn: &Connection,
    upload: &Upload,
    todo: Vec<LocalPage>,
    skipped: u32,
    page_total: usize,
    concurrency: usize,
    progress: Option<&indicatif::MultiProgress>,
) -> Result<Vec<(u32, [u8; 32])>, ClientError> {
    let job_id = &upload.job_id;
    let total_bytes: u64 = todo.iter().map(|p| p.entry.size).sum();
    let tty = std::io::stderr().is_terminal();
    let bar = progress_bar(
        progress,
        total_bytes,
        format!("{job_id} pages {skipped}/{page_total}"),
    );
    let done = Arc::new(std::sync::atomic::AtomicU32::new(skipped));
    let results: Vec<Result<(u32, [u8; 32]), ClientError>> = stream::iter(todo)
        .map(|p| {
            let (bar, done) = (bar.clone(), done.clone());
            async move {
                let r = send_with_retry(conn, upload, &p, &bar, |e, backoff| {
                    eprintln!(
                        "page {} ({}): {e}; retrying in {backoff:?}",
                        p.entry.index, p.entry.name
                    )
                })
                .await;
                if r.is_ok() {
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    bar.set_message(format!("{job_id} pages {n}/{page_total}"));
                    if !tty {
                        eprintln!("stored page {n}/{page_total} of {job_id}: {}", p.entry.name);
                    }
                }
                r.map(|sha256| (p.entry.index, sha256))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    results.into_iter().collect()
}

/// Sends one page; a rate limit, a busy pipeline, a full spool or a store that did not answer
/// in time is a "later", not a "no": back off and retry (telling `on_retry` what was refused
/// and how long it waits). Each "later" also halves the pages the connection sends at once
/// ([`gate`]), so a scanner that keeps more pages in flight than the server has places for
/// stops sending pages only to have them refused. A refusal names the page.
pub async fn send_with_retry(
    conn: &Connection,
    upload: &Upload,
    p: &LocalPage,
    bar: &ProgressBar,
    on_retry: impl Fn(&ClientError, Duration),
) -> Result<[u8; 32], ClientError> {
    let mut place = conn.pages.place().await;
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
                // Fewer pages in flight on this connection, and none held while waiting.
                place.refused();
                drop(place);
                on_retry(e, backoff);
                tokio::time::sleep(backoff).await;
                place = conn.pages.place().await;
                r = send_page(conn, upload, p, bar).await;
            }
            _ => break,
        }
    }
    if r.is_ok() {
        place.delivered();
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
