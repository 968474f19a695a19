//! The hot-folder agent: scanners and capture programs drop files into a folder (scan to
//! folder, an SMB share, an FTP drop); the agent takes each job once it is complete, pushes it,
//! and moves the originals to `.sent/` (or deletes them) only after the job is committed.
//!
//! - [`settle`] decides, from snapshots of the folder, what is complete and what makes a job;
//! - [`stage`] moves work through the agent's folders, one atomic rename per step, so that a
//!   crash anywhere leaves every file in exactly one place;
//! - this module runs the loop: scan (woken by inotify, and polling for network shares),
//!   stage what settled, push staged jobs with the push journal (so a restart resumes the same
//!   upload and never commits a job twice), back off with jitter while the server is away.

pub mod settle;
pub mod stage;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use quire_codecs::wire::ErrorCode;
use tokio::sync::mpsc;

pub use settle::{Grouping, NameRules};
pub use stage::{After, Layout};

use crate::journal::Journal;
use crate::push::{push_dir, PushOptions};
use crate::{local_err, ClientError, Connection};

/// How the agent works.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The watched folder.
    pub dir: PathBuf,
    pub grouping: Grouping,
    /// How long something must be unchanged before it is taken.
    pub settle: Duration,
    pub rules: NameRules,
    pub after: After,
    /// Pages in flight at once.
    pub concurrency: usize,
    /// Rescan at least this often (the only way on network shares, where inotify is blind).
    pub poll: Duration,
    /// Also wake on file system events (inotify).
    pub notify: bool,
    /// The longest wait between attempts while the server is away.
    pub retry_max: Duration,
    /// Return once nothing waits (for scripts): everything dropped before was sent or failed.
    pub once: bool,
}

/// What the agent did, for a status line or `--json` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        dir: PathBuf,
        /// Files of a half-gathered job put back, and deletions finished, after a crash.
        unstaged: usize,
        deleted: usize,
    },
    /// A job was taken from the folder.
    Staged {
        job: String,
        files: usize,
    },
    Committed {
        job: String,
        job_id: String,
        pages: u32,
        bytes: u64,
        /// Where the originals went; `None`: deleted.
        originals: Option<PathBuf>,
    },
    /// The job could not be pushed now; tried again after `wait`.
    Retrying {
        job: String,
        error: String,
        wait: Duration,
    },
    FailedFile {
        path: PathBuf,
        reason: String,
    },
    FailedJob {
        job: String,
        reason: String,
    },
}

/// Why pushing one staged job stopped.
enum Stop {
    /// The server or network: try again later, from the same job.
    Later(ClientError),
}

/// Runs the agent until an error it cannot go past (the folder itself unusable) or, with
/// `once`, until nothing waits. `connect` opens a connection whenever one is needed.
pub async fn run<C, F>(
    config: AgentConfig,
    connect: C,
    events: impl Fn(&Event),
) -> Result<(), ClientError>
where
    C: Fn() -> F,
    F: Future<Output = Result<Connection, ClientError>>,
{
    let dir = std::fs::canonicalize(&config.dir).map_err(|e| local_err(&config.dir, e))?;
    let layout = Layout::new(&dir);
    let _only_agent = lock_folder(&dir)?;
    let recovered = layout.open().map_err(|e| local_err(&dir, e))?;
    events(&Event::Started {
        dir: dir.clone(),
        unstaged: recovered.unstaged,
        deleted: recovered.deleted,
    });
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    let _watcher = if config.notify {
        watch(&dir, wake_tx)
    } else {
        None
    };
    let mut settler = settle::Settler::default();
    let mut conn: Option<Connection> = None;
    let mut delays = backoff(config.retry_max);
    let mut retry_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let listing = scan::top(&dir, &config.rules).map_err(|e| local_err(&dir, e))?;
        settler.observe(now, &listing.entries);
        for (path, reason) in listing.unusable {
            if let Ok(to) = layout.fail_file(&path, &reason) {
                events(&Event::FailedFile { path: to, reason });
            }
        }
        let ready = settler.ready(now, config.settle, config.grouping, &listing.entries);
        take(
            &layout,
            &config.rules,
            &listing.entries,
            &ready,
            &mut settler,
            &events,
        )?;

        let due = retry_at.is_none_or(|t| Instant::now() >= t);
        let staged = layout.staged().map_err(|e| local_err(&dir, e))?;
        if due && !staged.is_empty() {
            match push_staged(&config, &layout, &staged, &mut conn, &connect, &events).await {
                Ok(()) => {
                    delays = backoff(config.retry_max);
                    retry_at = None;
                }
                Err((job, Stop::Later(e))) => {
                    conn = None;
                    let wait = delays.next().unwrap_or(config.retry_max);
                    retry_at = Some(Instant::now() + wait);
                    events(&Event::Retrying {
                        job,
                        error: e.to_string(),
                        wait,
                    });
                }
            }
        }
        if config.once && listing.entries.is_empty() && staged_is_empty(&layout) {
            return Ok(());
        }
        let mut nap = config
            .poll
            .min(config.settle / 2)
            .max(Duration::from_millis(50));
        if let Some(t) = retry_at {
            nap = nap.min(t.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = wake.recv() => {
                // Several events arrive at once; one scan answers them all.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

fn staged_is_empty(layout: &Layout) -> bool {
    layout.staged().map(|s| s.is_empty()).unwrap_or(false)
}

fn backoff(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500).min(max))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Stages what settled: each ready folder or file as a job, or the quiet batch as one.
fn take(
    layout: &Layout,
    rules: &NameRules,
    entries: &[settle::Entry],
    ready: &settle::Ready,
    settler: &mut settle::Settler,
    events: &impl Fn(&Event),
) -> Result<(), ClientError> {
    let io = |e| local_err(layout.root(), e);
    for name in &ready.single {
        let is_folder = entries.iter().any(|e| &e.name == name && e.is_folder);
        let staged = if is_folder {
            layout.stage_folder(name)
        } else {
            layout.stage_files(name, std::slice::from_ref(name))
        };
        match staged {
            Ok(dir) => {
                let files = scan::set_aside_excluded(&dir, rules).map_err(io)?;
                events(&Event::Staged {
                    job: Layout::label(&dir),
                    files,
                });
            }
            // Gone between the scan and now: nothing to take.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        settler.taken(name);
    }
    if !ready.batch.is_empty() {
        match layout.stage_files("batch", &ready.batch) {
            Ok(dir) => events(&Event::Staged {
                job: Layout::label(&dir),
                files: ready.batch.len(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        for n in &ready.batch {
            settler.taken(n);
        }
    }
    Ok(())
}

/// Pushes staged jobs, oldest first. A job whose files cannot be sent goes to `.failed/`;
/// a failure of the server or the network stops here, naming the job, for a later retry.
async fn push_staged<C, F>(
    config: &AgentConfig,
    layout: &Layout,
    staged: &[PathBuf],
    conn: &mut Option<Connection>,
    connect: &C,
    events: &impl Fn(&Event),
) -> Result<(), (String, Stop)>
where
    C: Fn() -> F,
    F: Future<Output = Result<Connection, ClientError>>,
{
    for job_dir in staged {
        let job = Layout::label(job_dir);
        let later = |e| (job.clone(), Stop::Later(e));
        if scan::sendable(job_dir) == 0 {
            // Every file failed or is left out by the name rules: nothing to push.
            if std::fs::remove_dir(job_dir).is_err() {
                let reason = "nothing to send: every file is left out by the name rules";
                if layout.fail_job(job_dir, reason).is_ok() {
                    events(&Event::FailedJob {
                        job,
                        reason: reason.into(),
                    });
                }
            }
            continue;
        }
        if conn.as_ref().is_none_or(Connection::is_closed) {
            *conn = Some(connect().await.map_err(later)?);
        }
        let c = conn.as_ref().expect("connected above");
        for (path, reason) in scan::unreadable(job_dir) {
            if let Ok(to) = layout.fail_file(&path, &reason) {
                events(&Event::FailedFile { path: to, reason });
            }
        }
        let opts = PushOptions {
            job: None,
            concurrency: config.concurrency,
            progress: None,
            state_dir: layout.state(),
            again: false,
            follow_symlinks: false,
        };
        let journal = Journal::of_canonical(&layout.state(), job_dir, &c.tenant, &c.device_id);
        match push_dir(c, job_dir, &opts).await {
            Ok(report) => {
                let originals = layout
                    .finish(job_dir, config.after)
                    .map_err(|e| later(local_err(job_dir, e)))?;
                let _ = journal.forget();
                events(&Event::Committed {
                    job,
                    job_id: report.job_id,
                    pages: report.pages,
                    bytes: report.bytes,
                    originals,
                });
            }
            Err(e) => match fault_of_the_job(job_dir, &e) {
                Some(Fault::File(path)) => {
                    let reason = e.to_string();
                    if let Ok(to) = layout.fail_file(&path, &reason) {
                        events(&Event::FailedFile { path: to, reason });
                    }
                    // The rest of the job goes on the next round.
                    return Ok(());
                }
                Some(Fault::Job) => {
                    let reason = e.to_string();
                    let _ = journal.forget();
                    if layout.fail_job(job_dir, &reason).is_ok() {
                        events(&Event::FailedJob { job, reason });
                    }
                }
                None => return Err(later(e)),
            },
        }
    }
    Ok(())
}

enum Fault {
    /// This file cannot be sent (its name, its content).
    File(PathBuf),
    /// The job as a whole cannot be sent.
    Job,
}

/// Whether an error is the job's own (it would fail again the same way) rather than the
/// server's or the network's.
fn fault_of_the_job(job_dir: &Path, e: &ClientError) -> Option<Fault> {
    match e {
        ClientError::Local { path, .. } => {
            let path = PathBuf::from(path);
            if path.parent() == Some(job_dir) && path.is_file() {
                Some(Fault::File(path))
            } else {
                Some(Fault::Job)
            }
        }
        ClientError::Refused {
            code: ErrorCode::TooLarge | ErrorCode::Conflict,
            ..
        } => Some(Fault::Job),
        _ => None,
    }
}

/// One agent per folder: a second would race the first for the same files.
fn lock_folder(dir: &Path) -> Result<std::fs::File, ClientError> {
    let quire = dir.join(".quire");
    std::fs::create_dir_all(&quire).map_err(|e| local_err(&quire, e))?;
    let path = quire.join("agent.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| local_err(&path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(local_err(
            dir,
            "another quire agent watches this folder; stop it first",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(local_err(&path, e)),
    }
}

/// Wakes the loop on any change under `dir` (inotify on Linux). `None` if the platform or the
/// file system cannot watch: polling alone then.
fn watch(dir: &Path, wake: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut w = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        let _ = wake.try_send(());
    })
    .ok()?;
    w.watch(dir, notify::RecursiveMode::Recursive).ok()?;
    Some(w)
}

mod scan;
