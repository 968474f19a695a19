//! `quire-loadtest`: a fleet of simulated scanners pushing jobs at a Quire server.
//!
//! Each scanner is one QUIC connection that pushes `--jobs` jobs in turn (or jobs until
//! `--duration` is up), cycling through the job folders of `--corpus` or of a generated
//! `--generate` size mix; every page's acknowledgement latency goes into an HDR histogram.
//! Without `--server` a server is started on a loopback port with its data in a temporary
//! directory, in this process or as a child `quire serve` (`--child`), with the store of
//! `--store`. At the end every job is checked against the server's record of what it stored,
//! a JSON report is written, and beside it an SVG of throughput and p99 latency over time.

mod connects;
mod generate;
mod idle;
mod nodes;
mod plot;
mod scanner;
mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use quire_client::credential::{Credential, CredentialFile};
use quire_client::push::{hash_pages, LocalPage};
use quire_client::Connection;
use quire_codecs::wire::Frame;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(name = "quire-loadtest", version)]
struct Args {
    /// Concurrent scanners (one QUIC connection each), 1 to 1000.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    scanners: u32,
    /// Scanners that only connect and stay connected, idle (keep-alives), while the others
    /// push: they connect before the measured run, over `--idle-ramp-up` seconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=20000))]
    idle_scanners: u32,
    /// Seconds over which the idle scanners connect.
    #[arg(long, default_value_t = 30.0)]
    idle_ramp_up: f64,
    /// Jobs each scanner pushes.
    #[arg(long, default_value_t = 4)]
    jobs: u32,
    /// Push jobs until this many seconds have passed, instead of `--jobs` per scanner.
    #[arg(long)]
    duration: Option<f64>,
    /// Start the scanners evenly over this many seconds instead of all at once (a real fleet
    /// does not connect in the same millisecond).
    #[arg(long, default_value_t = 0.0)]
    ramp_up: f64,
    /// A folder of job folders (e.g. ../shared/corpus/jobs).
    #[arg(long, default_value = "../shared/corpus/jobs")]
    corpus: PathBuf,
    /// Generate jobs instead of reading `--corpus`: page sizes and weights like
    /// `50k:6,500k:3,5m:1`.
    #[arg(long, value_name = "SIZE-MIX")]
    generate: Option<String>,
    /// Pages per generated job.
    #[arg(long, default_value_t = 10)]
    pages_per_job: u32,
    /// Distinct generated jobs (scanners cycle through them).
    #[arg(long, default_value_t = 8)]
    generated_jobs: u32,
    /// Seed of the generated pages.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The store of the server this tool starts.
    #[arg(long, value_enum, default_value = "local")]
    store: server::StoreKind,
    /// Endpoint of the S3 or Azure store (loopback test servers: see scripts/test-servers.sh).
    #[arg(long)]
    store_endpoint: Option<String>,
    /// Bucket (S3) or container (Azure); it must exist.
    #[arg(long, default_value = "quire-test")]
    store_bucket: String,
    /// When the started server acknowledges a page: stored or spooled.
    #[arg(long, default_value = "stored", value_parser = ["stored", "spooled"])]
    ack: String,
    /// Start the server as a child `quire serve` process (next to this binary), so that its
    /// CPU time and peak memory are measured apart from the scanners'.
    #[arg(long)]
    child: bool,
    /// With --child: the CPUs the server may use (`taskset -c LIST`), e.g. `0`; run the load
    /// test itself on the others (`taskset -c 1 quire-loadtest --child --server-cpus 0 …`) to
    /// measure what the server alone costs per MB.
    #[arg(long, requires = "child")]
    server_cpus: Option<String>,
    /// With --child: write the server's log to this file (`QUIRE_LOG` chooses what it says).
    #[arg(long, requires = "child")]
    server_log: Option<PathBuf>,
    /// Measure the raw quinn bulk-upload ceiling of this machine first (one connection, Quire's
    /// TLS and windows, no protocol or pipeline), and report Quire's throughput as a share of it.
    #[arg(long)]
    transport_ceiling: bool,
    /// Pages in flight per job (per scanner, with one job in flight).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Jobs each scanner pushes at once over its connection (a scanner with a backlog starts
    /// the next job while the last one's final pages and commit are in flight); each job has
    /// its own `--concurrency` pages in flight.
    #[arg(long, default_value_t = 1)]
    jobs_in_flight: usize,
    /// Seconds between the pages each job lane starts, as a scanner feeding pages at its own
    /// pace; the first after a random part of one interval, so that a fleet does not start
    /// in step. Without it scanners push as fast as they are acknowledged: the server's
    /// capacity, with latency as long as its queue.
    #[arg(long)]
    page_interval: Option<f64>,
    /// Server to load (host:port), or several nodes of one deployment separated by commas
    /// (scanners spread over them evenly; the report has each node's part); without it one
    /// is started in this process.
    #[arg(long)]
    server: Option<String>,
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

#[derive(Debug, Serialize)]
pub(crate) struct Latency {
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
    /// Pages per second the scanners offer with `--page-interval` (each lane one page per
    /// interval); without it they offer as many as the server takes.
    offered_pages_per_s: Option<f64>,
    /// Peak RSS of the server process in MiB; when the server runs in this process this
    /// includes the scanners too, and `server_in_process` says so. `None` for `--server`.
    server_rss_mb: Option<f64>,
    /// CPU seconds (user + system) the server process used during the run.
    server_cpu_s: Option<f64>,
    /// Server CPU time per MB pushed (child server only).
    server_cpu_ms_per_mb: Option<f64>,
    /// This process's CPU time (the scanners, and an in-process server if there is one) per MB.
    client_cpu_ms_per_mb: Option<f64>,
    /// Context switches of the server's threads per page stored (child server only): the
    /// hand-offs between the runtime, rayon and the blocking pool, and the waits for fsync.
    server_context_switches_per_page: Option<f64>,
    server_in_process: bool,
    /// Raw quinn bulk upload on this machine, measured just before the run (MB/s).
    transport_ceiling_mb_per_s: Option<f64>,
    /// `mb_per_s` / `transport_ceiling_mb_per_s`.
    share_of_transport_ceiling: Option<f64>,
    store: String,
    ack: String,
    /// Work that failed: pages, commits, and with `--jobs` a scanner that could not connect
    /// (with `--duration` it connects again; its failed attempts are in `connects`).
    errors: u64,
    /// Pages refused as a "later" (busy, rate limit, full spool, store outage) and sent
    /// again, as `quire push` does.
    retries: u64,
    /// Errors by kind (the message's first words).
    errors_by_kind: std::collections::BTreeMap<String, u64>,
    /// Connections the scanners made, by the way they went ("quic", "tcp").
    connections: std::collections::BTreeMap<String, u64>,
    /// What the scanners' connections sent and received, summed over them as they ended.
    scanner_transport: scanner::TransportTotals,
    /// The idle scanners (`--idle-scanners`), if any.
    idle: Option<idle::IdleReport>,
    /// Every scanner's connect attempts, pushing and idle: those that failed before the
    /// whole fleet had connected once, and after.
    connects: connects::ConnectReport,
    /// Each node's part, with `--server A,B,…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<nodes::NodeReport>>,
    verified: bool,
    timeline: Vec<plot::Sample>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // The scanners' own log (their QUIC stack's included), as `quire` reads it.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("QUIRE_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(n) = args.hammer {
        return hammer(&args, n).await;
    }
    let ceiling = if args.transport_ceiling {
        let c = quire_benches::transport::ceiling_mb_per_s(256 * 1024 * 1024, 1, 3).await?;
        eprintln!("raw quinn bulk upload on this machine: {c:.1} MB/s");
        Some(c)
    } else {
        None
    };
    let work = tempfile::tempdir()?;
    let corpus = corpus_for(&args, work.path())?;
    let corpus = Arc::new(corpus);

    let (started, cred, addrs) = server_for(&args, work.path()).await?;
    let nodes = Arc::new(nodes::Nodes::new(addrs)?);
    let addr = nodes.first();
    let fleet = u64::from(args.scanners) + u64::from(args.idle_scanners);
    let connects = Arc::new(connects::ConnectLog::new(fleet));
    let idle = match args.idle_scanners {
        0 => None,
        n => {
            let ramp = Duration::from_secs_f64(args.idle_ramp_up.max(0.0));
            Some(idle::IdleFleet::connect(&cred, addr, (n, ramp), &connects).await)
        }
    };
    let usage = server::Usage::start(started.as_ref().map(|s| s.pid()));
    let started_at = Instant::now();
    let page_interval = args
        .page_interval
        .map(|s| Duration::from_secs_f64(s.max(0.001)));
    let ctx = Arc::new(Ctx {
        corpus: corpus.clone(),
        hist: Arc::new(Mutex::new(latency_histogram()?)),
        interval_hist: Arc::new(Mutex::new(latency_histogram()?)),
        pages_done: Arc::default(),
        bytes_done: Arc::default(),
        errors: Arc::default(),
        retries: Arc::default(),
        error_kinds: Arc::default(),
        connections: Arc::default(),
        transport: Arc::default(),
        in_flight: Arc::default(),
        committed: Arc::default(),
        connects: connects.clone(),
        bar: progress_bar(&args, &corpus),
        cred: cred.clone(),
        nodes: nodes.clone(),
        concurrency: args.concurrency,
        jobs_in_flight: args.jobs_in_flight.max(1),
        page_interval,
        jobs: args.jobs,
        scanners: args.scanners,
        deadline: args
            .duration
            .map(|d| started_at + Duration::from_secs_f64(d.max(0.1))),
    });
    let timeline: Arc<Mutex<Vec<plot::Sample>>> = Arc::default();
    let ticker = spawn_ticker(
        started_at,
        ctx.bar.clone(),
        Counters {
            bytes: ctx.bytes_done.clone(),
            pages: ctx.pages_done.clone(),
            errors: ctx.errors.clone(),
            in_flight: ctx.in_flight.clone(),
        },
        ctx.interval_hist.clone(),
        timeline.clone(),
    );

    let step = Duration::from_secs_f64(args.ramp_up.max(0.0) / f64::from(args.scanners));
    let scanners: Vec<_> = (0..args.scanners)
        .map(|s| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(step * s).await;
                scanner::run_scanner(ctx, s).await
            })
        })
        .collect();
    for s in scanners {
        s.await?;
    }
    let seconds = started_at.elapsed().as_secs_f64();
    ticker.abort();
    ctx.bar.finish_and_clear();
    let used = usage.finish();
    let idle = match idle {
        Some(fleet) => Some(fleet.finish().await),
        None => None,
    };

    let done_jobs = ctx.committed.lock().expect("lock").clone();
    let verified =
        ctx.errors.load(Ordering::Relaxed) == 0 && verify(&cred, addr, &done_jobs, &corpus).await?;
    let timeline = timeline.lock().expect("timeline lock").clone();
    let report = Report {
        idle,
        server_in_process: started.as_ref().is_some_and(|s| s.in_process()),
        verified,
        timeline,
        ..Report::of(&args, &ctx, seconds, &used, ceiling)
    };
    if let Some(path) = &args.report {
        write_report(path, &args, &report)?;
    }
    print_summary(&report)?;
    if let Some(s) = started {
        s.stop().await;
    }
    if !report.verified {
        bail!("verification failed");
    }
    Ok(())
}

impl Report {
    /// The run's figures from its counters; what only `main` knows (the idle fleet, whether
    /// every job verified, the timeline, whether the server ran in this process) is left
    /// empty.
    fn of(
        args: &Args,
        ctx: &Ctx,
        seconds: f64,
        used: &server::Used,
        ceiling: Option<f64>,
    ) -> Report {
        let pages = ctx.pages_done.load(Ordering::Relaxed);
        let bytes = ctx.bytes_done.load(Ordering::Relaxed);
        let per_mb = |cpu_s: f64| cpu_s * 1e3 / (bytes as f64 / 1e6);
        Report {
            scanners: args.scanners,
            jobs: ctx.committed.lock().expect("lock").len() as u64,
            pages,
            bytes,
            seconds,
            pages_per_s: pages as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
            latency_ms: Latency::of(&ctx.hist.lock().expect("histogram lock")),
            offered_pages_per_s: ctx.page_interval.map(|every| {
                f64::from(args.scanners) * ctx.jobs_in_flight as f64 / every.as_secs_f64()
            }),
            server_rss_mb: used.server_rss_mb,
            server_cpu_s: used.server_cpu_s,
            server_cpu_ms_per_mb: used.server_cpu_s.map(per_mb),
            client_cpu_ms_per_mb: used.own_cpu_s.map(per_mb),
            server_context_switches_per_page: used
                .server_switches
                .filter(|_| pages > 0)
                .map(|n| n as f64 / pages as f64),
            server_in_process: false,
            transport_ceiling_mb_per_s: ceiling,
            share_of_transport_ceiling: ceiling.map(|c| bytes as f64 / seconds / 1e6 / c),
            store: format!("{:?}", args.store).to_lowercase(),
            ack: args.ack.clone(),
            errors: ctx.errors.load(Ordering::Relaxed),
            retries: ctx.retries.load(Ordering::Relaxed),
            errors_by_kind: ctx.error_kinds.lock().expect("lock").clone(),
            connections: ctx.connections.lock().expect("lock").clone(),
            scanner_transport: ctx.transport.lock().expect("lock").clone(),
            idle: None,
            connects: ctx.connects.report(),
            nodes: ctx.nodes.report(seconds),
            verified: false,
            timeline: Vec::new(),
        }
    }
}

/// A bar of pages for a run of so many jobs, a spinner for a run of so long.
fn progress_bar(args: &Args, corpus: &[Vec<LocalPage>]) -> ProgressBar {
    let bar = match args.duration {
        Some(_) => ProgressBar::new_spinner(),
        None => ProgressBar::new(
            (0..args.scanners as usize * args.jobs as usize)
                .map(|i| corpus[i % corpus.len()].len() as u64)
                .sum(),
        ),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} pages {msg}").expect("template"),
    );
    bar
}

/// Microseconds from 1 µs to 10 minutes, 3 significant digits.
pub(crate) fn latency_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?)
}

/// The server to push to: `--server` with `--credential` (default the development device's),
/// or one this run starts (in process, or a child with `--child`) and stops at the end.
async fn server_for(
    args: &Args,
    work: &Path,
) -> Result<(Option<server::Started>, Credential, Vec<SocketAddr>)> {
    if let Some(list) = &args.server {
        let path = args
            .credential
            .clone()
            .unwrap_or_else(|| PathBuf::from("quire-data/dev/device.cred"));
        return Ok((None, Credential::load(&path)?, nodes::parse(list)?));
    }
    let setup = server::Setup {
        store: args.store,
        endpoint: args.store_endpoint.clone(),
        bucket: args.store_bucket.clone(),
        ack: args.ack.clone(),
        server_cpus: args.server_cpus.clone(),
        server_log: args.server_log.clone(),
    };
    let (s, addr, cred) = server::Started::start(work, &setup, args.child).await?;
    Ok((Some(s), Credential::load(&cred)?, vec![addr]))
}

impl Latency {
    /// Quantiles of acknowledgement latency recorded in microseconds, in milliseconds.
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// The jobs to push: generated from `--generate`'s mix under `work`, or read from `--corpus`.
fn corpus_for(args: &Args, work: &Path) -> Result<Vec<Vec<LocalPage>>> {
    Ok(match &args.generate {
        Some(mix) => {
            let mix = generate::parse_mix(mix)?;
            let dir = work.join("generated");
            let bytes = generate::generate(
                &dir,
                &mix,
                args.generated_jobs,
                args.pages_per_job,
                args.seed,
            )?;
            eprintln!(
                "generated {} jobs of {} pages, {:.1} MB",
                args.generated_jobs,
                args.pages_per_job,
                bytes as f64 / 1e6
            );
            scanner::load_corpus(&dir)?
        }
        None => scanner::load_corpus(&args.corpus)?,
    })
}

/// The load test's shared counters, as the once-a-second ticker reads them.
struct Counters {
    bytes: Arc<AtomicU64>,
    pages: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
}

/// Once a second: a sample for the timeline (rate and p99 of that second) and the spinner.
fn spawn_ticker(
    started_at: Instant,
    bar: ProgressBar,
    c: Counters,
    interval_hist: Arc<Mutex<Histogram<u64>>>,
    timeline: Arc<Mutex<Vec<plot::Sample>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (mut last_bytes, mut last_pages, mut last_t) = (0u64, 0u64, 0f64);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let t = started_at.elapsed().as_secs_f64();
            let (b, p) = (
                c.bytes.load(Ordering::Relaxed),
                c.pages.load(Ordering::Relaxed),
            );
            let dt = (t - last_t).max(1e-9);
            let p99_ms = {
                let mut h = interval_hist.lock().expect("histogram lock");
                let v = if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.99) as f64 / 1000.0
                };
                h.reset();
                v
            };
            let sample = plot::Sample {
                t,
                mb_per_s: (b - last_bytes) as f64 / dt / 1e6,
                pages_per_s: (p - last_pages) as f64 / dt,
                p99_ms,
            };
            bar.set_message(format!(
                "{:.1} MB/s, {:.0} pages/s, p99 {:.0} ms, {} in flight, {} errors",
                sample.mb_per_s,
                sample.pages_per_s,
                p99_ms,
                c.in_flight.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed)
            ));
            timeline.lock().expect("timeline lock").push(sample);
            (last_bytes, last_pages, last_t) = (b, p, t);
        }
    })
}

/// Whether the server's record of every committed job matches what was pushed.
async fn verify(
    cred: &Credential,
    addr: SocketAddr,
    done_jobs: &[(String, usize)],
    corpus: &[Vec<LocalPage>],
) -> Result<bool> {
    let conn = Connection::connect(cred, Some(addr)).await?;
    let mut verified = true;
    for (job_id, idx) in done_jobs {
        let status = conn
            .call(&Frame::JobOpen {
                tenant: conn.tenant.clone(),
                job_id: job_id.clone(),
                upload: None,
            })
            .await?;
        // The scanners hashed each page while sending it; hash the files here to compare.
        let mut pushed = corpus[*idx].clone();
        hash_pages(&mut pushed)?;
        let ok = match status {
            Frame::JobStatus { committed, pages } => {
                committed
                    && pages.len() == pushed.len()
                    && pages.iter().zip(pushed.iter()).all(|(a, b)| a == &b.entry)
            }
            _ => false,
        };
        if !ok {
            eprintln!("job {job_id} does not match what was pushed");
            verified = false;
        }
    }
    conn.close().await;
    Ok(verified)
}

/// The report without its timeline, for the terminal.
fn print_summary(report: &Report) -> Result<()> {
    let mut summary = serde_json::to_value(report)?;
    if let Some(o) = summary.as_object_mut() {
        o.remove("timeline");
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// Writes the JSON report to `path` and its chart beside it (`.svg`).
fn write_report(path: &Path, args: &Args, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    let svg_path = path.with_extension("svg");
    let title = format!(
        "{} scanners, {} store, ack {}: {:.1} MB/s, {:.0} pages/s, p99 {:.0} ms",
        args.scanners,
        report.store,
        report.ack,
        report.mb_per_s,
        report.pages_per_s,
        report.latency_ms.p99
    );
    std::fs::write(&svg_path, plot::svg(&report.timeline, &title))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    eprintln!("report: {}, chart: {}", path.display(), svg_path.display());
    Ok(())
}

/// What every simulated scanner shares.
struct Ctx {
    corpus: Arc<Vec<Vec<LocalPage>>>,
    hist: Arc<Mutex<Histogram<u64>>>,
    interval_hist: Arc<Mutex<Histogram<u64>>>,
    pages_done: Arc<AtomicU64>,
    bytes_done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
    error_kinds: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    connections: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    transport: Arc<Mutex<scanner::TransportTotals>>,
    in_flight: Arc<AtomicU64>,
    committed: Arc<Mutex<Vec<(String, usize)>>>,
    connects: Arc<connects::ConnectLog>,
    bar: ProgressBar,
    cred: Credential,
    nodes: Arc<nodes::Nodes>,
    concurrency: usize,
    jobs_in_flight: usize,
    page_interval: Option<Duration>,
    jobs: u32,
    scanners: u32,
    deadline: Option<Instant>,
}

impl Ctx {
    fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        let text = e.to_string();
        eprintln!("{what}: {text}");
        let kind: String = text
            .split(':')
            .next()
            .unwrap_or("error")
            .chars()
            .take(60)
            .collect();
        *self
            .error_kinds
            .lock()
            .expect("lock")
            .entry(kind)
            .or_default() += 1;
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn more_jobs(&self, done: u32) -> bool {
        match self.deadline {
            Some(d) => Instant::now() < d,
            None => done < self.jobs,
        }
    }
}

/// One scanner: one connection, jobs one after another. A lost connection is re-opened
/// (counted as one error) rather than failing every page that follows.
/// Bad handshakes as fast as `n` tasks can make them, for `--hammer-seconds`.
async fn hammer(args: &Args, n: u32) -> Result<()> {
    let Some(list) = &args.server else {
        bail!("--hammer needs --server");
    };
    let addr = nodes::parse(list)?[0];
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
                    let r = quire_client::Connection::login(quire_client::Login {
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
