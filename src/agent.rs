//! `quire agent --watch DIR`: the hot-folder agent (see `quire_client::agent`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use quire_client::agent::{self, After, AgentConfig, Event, Grouping, NameRules};
use quire_client::credential::DEV_DEVICE_CRED;
use quire_client::Connection;

use crate::{load_credential, ClientArgs};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The folder scanners drop files into.
    #[arg(long)]
    watch: PathBuf,
    /// What a job is: each subfolder (`folder`; files directly in the folder are one job
    /// each), each `file`, or everything that arrived until the folder was `quiet`.
    #[arg(long, default_value = "folder")]
    job_per: Grouping,
    /// Seconds a file or folder must stay unchanged before it is taken (longer than the
    /// longest pause of the slowest writer; network shares may need more).
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// Take only names matching these globs (repeatable) [default: every name].
    #[arg(long)]
    include: Vec<String>,
    /// Also leave out names matching these globs (repeatable). Hidden names (`.*`), `~*`,
    /// `*.tmp`, `*.temp`, `*.part`, `*.partial`, `*.crdownload` and `*.swp` are left out
    /// unless --no-default-excludes.
    #[arg(long)]
    exclude: Vec<String>,
    #[arg(long)]
    no_default_excludes: bool,
    /// After a job is committed, originals `move` to DIR/.sent/ or are `delete`d.
    #[arg(long, default_value = "move")]
    after: After,
    /// Rescan at least this often, in seconds (network shares send no change events).
    #[arg(long, default_value_t = 1.0)]
    poll_secs: f64,
    /// Do not use file system events; poll only.
    #[arg(long)]
    poll_only: bool,
    /// Longest wait between attempts while the server cannot be reached, in seconds.
    #[arg(long, default_value_t = 30.0)]
    retry_max_secs: f64,
    /// Pages in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Send what is there, then exit (for cron and scripts) instead of watching.
    #[arg(long)]
    once: bool,
    /// One JSON object per event on standard output, for supervisors.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn seconds(flag: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{flag} {v} is not a number of seconds above 0"))
}

pub async fn agent(a: AgentArgs) -> Result<()> {
    let rules = NameRules::new(&a.include, &a.exclude, a.no_default_excludes)
        .map_err(anyhow::Error::msg)
        .context("--include/--exclude")?;
    let config = AgentConfig {
        dir: a.watch.clone(),
        grouping: a.job_per,
        settle: seconds("settle-secs", a.settle_secs)?,
        rules,
        after: a.after,
        concurrency: a.concurrency.max(1),
        poll: seconds("poll-secs", a.poll_secs)?,
        notify: !a.poll_only,
        retry_max: seconds("retry-max-secs", a.retry_max_secs)?,
        once: a.once,
    };
    quire_client::transport::set_default(a.client.transport);
    let (cred, path) = load_credential(&a.client, DEV_DEVICE_CRED)?;
    let server = a
        .client
        .server
        .clone()
        .unwrap_or_else(|| cred.server.clone());
    let connect = || Connection::connect_to(&cred, &server);
    let json = a.json;
    agent::run(config, connect, |e| report(e, json))
        .await
        .with_context(|| format!("watching {} as {}", a.watch.display(), path.display()))
}

fn report(e: &Event, json: bool) {
    if json {
        println!("{}", event_json(e));
        return;
    }
    match e {
        Event::Started {
            dir,
            unstaged,
            deleted,
        } => eprintln!(
            "watching {}{}",
            dir.display(),
            if unstaged + deleted > 0 {
                format!(" (after a crash: {unstaged} files put back, {deleted} sent jobs deleted)")
            } else {
                String::new()
            }
        ),
        Event::Staged { job, files } => eprintln!("{job}: taken, {files} files"),
        Event::Committed {
            job,
            job_id,
            pages,
            bytes,
            originals,
        } => {
            eprintln!(
                "{job}: committed as {job_id}, {pages} pages, {bytes} bytes; originals {}",
                originals
                    .as_ref()
                    .map_or("deleted".to_string(), |p| format!("in {}", p.display()))
            );
            println!("{job_id}");
        }
        Event::Retrying { job, error, wait } => {
            eprintln!(
                "{job}: not sent yet ({error}); trying again in {:.1} s",
                wait.as_secs_f64()
            )
        }
        Event::FailedFile { path, reason } => {
            eprintln!("{}: cannot be sent: {reason}", path.display())
        }
        Event::FailedJob { job, reason } => {
            eprintln!("{job}: cannot be sent, moved to .failed/: {reason}")
        }
    }
}

fn event_json(e: &Event) -> serde_json::Value {
    use serde_json::json;
    match e {
        Event::Started {
            dir,
            unstaged,
            deleted,
        } => {
            json!({"event": "started", "dir": dir.display().to_string(), "unstaged": unstaged, "deleted": deleted})
        }
        Event::Staged { job, files } => json!({"event": "staged", "job": job, "files": files}),
        Event::Committed {
            job,
            job_id,
            pages,
            bytes,
            originals,
        } => json!({"event": "committed", "job": job, "job_id": job_id, "pages": pages,
                    "bytes": bytes, "originals": originals.as_ref().map(|p| p.display().to_string())}),
        Event::Retrying { job, error, wait } => json!({"event": "retrying", "job": job,
                    "error": error, "wait_secs": wait.as_secs_f64()}),
        Event::FailedFile { path, reason } => {
            json!({"event": "failed-file", "path": path.display().to_string(), "reason": reason})
        }
        Event::FailedJob { job, reason } => {
            json!({"event": "failed-job", "job": job, "reason": reason})
        }
    }
}
