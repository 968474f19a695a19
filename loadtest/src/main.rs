//! `quire-loadtest`: a fleet of simulated scanners pushing jobs at a Quire server.
//!
//! Each scanner is one QUIC connection that pushes `--jobs` jobs in turn, cycling through the
//! job folders of `--corpus`; every page's acknowledgement latency goes into an HDR histogram.
//! Without `--server` a server is started in this process on a loopback port with its data
//! in a temporary directory. At the end every job is checked against the server's record of
//! what it stored, and a JSON report is written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use quire::client::push::{new_job_id, scan_dir, send_page, LocalPage};
use quire::client::Connection;
use quire::credential::Credential;
use quire_codecs::wire::Frame;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(name = "quire-loadtest", version)]
struct Args {
    /// Concurrent scanners (one QUIC connection each), 1 to 1000.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    scanners: u32,
    /// Jobs each scanner pushes.
    #[arg(long, default_value_t = 4)]
    jobs: u32,
    /// A folder of job folders (e.g. ../shared/corpus/jobs).
    #[arg(long, default_value = "../shared/corpus/jobs")]
    corpus: PathBuf,
    /// Pages in flight per scanner.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Server to load; without it one is started in this process.
    #[arg(long)]
    server: Option<std::net::SocketAddr>,
    /// Device credential (with --server).
    #[arg(long)]
    credential: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Instead of scanners, run this many tasks that connect with a wrong secret over and
    /// over (needs --server and --credential, whose device id and tenant they borrow).
    #[arg(long)]
    hammer: Option<u32>,
    /// How long the hammer runs, in seconds.
    #[arg(long, default_value_t = 10)]
    hammer_seconds: u64,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

#[derive(Serialize)]
struct Report {
    scanners: u32,
    jobs: u64,
    pages: u64,
    bytes: u64,
    seconds: f64,
    pages_per_s: f64,
    mb_per_s: f64,
    latency_ms: Latency,
    /// Peak RSS of the server process in MiB; when the server runs in this process this
    /// includes the scanners too, and `server_in_process` says so.
    server_rss_mb: Option<f64>,
    server_in_process: bool,
    errors: u64,
    verified: bool,
}

fn peak_rss_mib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn load_corpus(dir: &Path) -> Result<Vec<Vec<LocalPage>>> {
    let mut jobs = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading corpus {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let pages = scan_dir(&d)?;
        if !pages.is_empty() {
            jobs.push(pages);
        }
    }
    if jobs.is_empty() {
        bail!("no job folders with pages under {}", dir.display());
    }
    Ok(jobs)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(n) = args.hammer {
        return hammer(&args, n).await;
    }
    let corpus = Arc::new(load_corpus(&args.corpus)?);

    let mut _server_dir = None;
    let mut server_task = None;
    let (cred, addr, in_process) = match args.server {
        Some(addr) => {
            let path = args
                .credential
                .clone()
                .unwrap_or_else(|| PathBuf::from("quire-data/dev/device.cred"));
            (Credential::load(&path)?, addr, false)
        }
        None => {
            let dir = tempfile::tempdir()?;
            let config = quire::config::ServerConfig::load(
                None,
                Some("127.0.0.1:0".parse()?),
                Some(dir.path().join("quire-data")),
            )?;
            let server = Arc::new(quire::server::Server::start(config).await?);
            let addr = server.local_addr();
            let s = server.clone();
            server_task = Some(tokio::spawn(async move { s.run().await }));
            let cred = Credential::load(&dir.path().join("quire-data/dev/device.cred"))?;
            _server_dir = Some((dir, server));
            (cred, addr, true)
        }
    };

    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        600_000_000,
        3,
    )?));
    let pages_done = Arc::new(AtomicU64::new(0));
    let bytes_done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let committed: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let total_pages: u64 = (0..args.scanners as usize * args.jobs as usize)
        .map(|i| corpus[i % corpus.len()].len() as u64)
        .sum();
    let bar = ProgressBar::new(total_pages);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} pages {msg}")
            .expect("template"),
    );
    let started = Instant::now();
    let ticker = {
        let (bar, bytes_done, errors) = (bar.clone(), bytes_done.clone(), errors.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let secs = started.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "{:.1} MB/s, {:.0} pages/s, {} errors",
                    bytes_done.load(Ordering::Relaxed) as f64 / secs / 1e6,
                    bar.position() as f64 / secs,
                    errors.load(Ordering::Relaxed)
                ));
            }
        })
    };

    let ctx = Arc::new(Ctx {
        corpus: corpus.clone(),
        hist: hist.clone(),
        pages_done: pages_done.clone(),
        bytes_done: bytes_done.clone(),
        errors: errors.clone(),
        committed: committed.clone(),
        bar: bar.clone(),
        cred: cred.clone(),
        addr,
        concurrency: args.concurrency,
        jobs: args.jobs,
    });
    let scanners: Vec<_> = (0..args.scanners)
        .map(|s| tokio::spawn(run_scanner(ctx.clone(), s)))
        .collect();
    for s in scanners {
        s.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();

    // Verification: the server's record of every committed job matches the corpus.
    let conn = Connection::connect(&cred, Some(addr)).await?;
    let mut verified = errors.load(Ordering::Relaxed) == 0;
    let done_jobs = committed.lock().expect("lock").clone();
    for (job_id, idx) in done_jobs.iter() {
        let status = conn
            .call(&Frame::JobOpen {
                tenant: conn.tenant.clone(),
                job_id: job_id.clone(),
            })
            .await?;
        let ok = match status {
            Frame::JobStatus { committed, pages } => {
                committed
                    && pages.len() == corpus[*idx].len()
                    && pages
                        .iter()
                        .zip(corpus[*idx].iter())
                        .all(|(a, b)| a == &b.entry)
            }
            _ => false,
        };
        if !ok {
            eprintln!("job {job_id} does not match what was pushed");
            verified = false;
        }
    }
    conn.close().await;

    let h = hist.lock().expect("histogram lock");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let pages = pages_done.load(Ordering::Relaxed);
    let bytes = bytes_done.load(Ordering::Relaxed);
    let report = Report {
        scanners: args.scanners,
        jobs: committed.lock().expect("lock").len() as u64,
        pages,
        bytes,
        seconds,
        pages_per_s: pages as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        },
        server_rss_mb: if in_process {
            peak_rss_mib("self")
        } else {
            None
        },
        server_in_process: in_process,
        errors: errors.load(Ordering::Relaxed),
        verified,
    };
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &args.report {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(t) = server_task {
        t.abort();
    }
    if !report.verified {
        bail!("verification failed");
    }
    Ok(())
}

/// What every simulated scanner shares.
struct Ctx {
    corpus: Arc<Vec<Vec<LocalPage>>>,
    hist: Arc<Mutex<Histogram<u64>>>,
    pages_done: Arc<AtomicU64>,
    bytes_done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    committed: Arc<Mutex<Vec<(String, usize)>>>,
    bar: ProgressBar,
    cred: Credential,
    addr: std::net::SocketAddr,
    concurrency: usize,
    jobs: u32,
}

/// One scanner: one connection, `jobs` jobs one after another.
async fn run_scanner(ctx: Arc<Ctx>, s: u32) {
    let conn = match Connection::connect(&ctx.cred, Some(ctx.addr)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scanner {s}: {e}");
            ctx.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    for j in 0..ctx.jobs {
        let idx = (s * ctx.jobs + j) as usize % ctx.corpus.len();
        let pages = &ctx.corpus[idx];
        let job_id = new_job_id();
        let mut results = Vec::with_capacity(pages.len());
        {
            // A hand-rolled window: stream combinators over borrowed closures trip the
            // compiler's `Send` inference inside a spawned task.
            use futures::stream::{FuturesUnordered, StreamExt};
            let mut inflight = FuturesUnordered::new();
            let mut next = pages.iter();
            loop {
                while inflight.len() < ctx.concurrency.max(1) {
                    match next.next() {
                        Some(p) => inflight.push(push_one(&ctx, &conn, &job_id, p)),
                        None => break,
                    }
                }
                match inflight.next().await {
                    Some(ok) => results.push(ok),
                    None => break,
                }
            }
        }
        if !results.iter().all(|ok| *ok) {
            continue;
        }
        let commit = conn
            .call(&Frame::JobCommit {
                tenant: conn.tenant.clone(),
                job_id: job_id.clone(),
                page_count: pages.len() as u32,
            })
            .await;
        match commit {
            Ok(_) => ctx.committed.lock().expect("lock").push((job_id, idx)),
            Err(e) => {
                eprintln!("scanner {s} commit {job_id}: {e}");
                ctx.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    conn.close().await;
}

/// Pushes one page and records its acknowledgement latency.
async fn push_one(ctx: &Ctx, conn: &Connection, job_id: &str, p: &LocalPage) -> bool {
    let t = Instant::now();
    match send_page(conn, job_id, p, &ProgressBar::hidden()).await {
        Ok(()) => {
            let us = t.elapsed().as_micros().max(1) as u64;
            ctx.hist.lock().expect("histogram lock").record(us).ok();
            ctx.pages_done.fetch_add(1, Ordering::Relaxed);
            ctx.bytes_done.fetch_add(p.entry.size, Ordering::Relaxed);
            ctx.bar.inc(1);
            true
        }
        Err(e) => {
            eprintln!("job {job_id} page {}: {e}", p.entry.index);
            ctx.errors.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Bad handshakes as fast as `n` tasks can make them, for `--hammer-seconds`.
async fn hammer(args: &Args, n: u32) -> Result<()> {
    let Some(addr) = args.server else {
        bail!("--hammer needs --server");
    };
    let path = args
        .credential
        .clone()
        .unwrap_or_else(|| PathBuf::from("quire-data/dev/device.cred"));
    let cred = Arc::new(Credential::load(&path)?);
    let attempts = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.hammer_seconds);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (cred, attempts, refused) = (cred.clone(), attempts.clone(), refused.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let mut secret = [0u8; 32];
                    getrandom::fill(&mut secret).expect("randomness");
                    let r = quire::client::Connection::login(quire::client::Login {
                        addr,
                        server_name: &cred.server_name,
                        ca_pem: &cred.server_ca,
                        alpn: quire_codecs::wire::ALPN,
                        tenant: &cred.tenant,
                        device_id: &cred.device_id,
                        secret,
                    })
                    .await;
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if r.is_err() {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let a = attempts.load(Ordering::Relaxed);
    println!(
        "{{\"hammer_attempts\": {a}, \"refused\": {}, \"per_s\": {:.1}}}",
        refused.load(Ordering::Relaxed),
        a as f64 / args.hammer_seconds as f64
    );
    Ok(())
}
