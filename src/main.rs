//! The `quire` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use quire_client::credential::{Credential, CredentialFile, DEV_ADMIN_CRED, DEV_DEVICE_CRED};
use quire_client::{self as client, push::PushOptions, ClientError, Connection};
use quire_server::config::ServerConfig;
use quire_server::Server;

mod admin;
mod agent;
mod verify;
use admin::{admin, AdminArgs};

/// Quire: scanners push jobs over QUIC; every page is hashed, compressed, encrypted under
/// its tenant's key and written to an object store.
///
/// Quick start (one terminal each, from the same directory):
///   quire serve                       # dev certificate, dev tenant and device, ./quire-data
///   quire push samples/scan-job       # prints the job id last
///   quire get --job JOB_ID --out restored/
#[derive(Parser, Debug)]
#[command(
    name = "quire",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("QUIRE_COMMIT"), ")"),
    verbatim_doc_comment,
    after_help = "Exit codes: 0 done; 1 error; 2 bad usage; 3 the server cannot be reached or is \
                  busy, try again later; 4 the server refused (credential, device state, \
                  permission or request); 5 a local problem (files, credential file, TLS setup)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text` for people, `json` (one object per line)
    /// for a log pipeline.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "QUIRE_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the ingest server (QUIC on 127.0.0.1:4433, data in ./quire-data by default).
    Serve(ServeArgs),
    /// Push each DIR as one job, its files as pages in name order; resumes if interrupted.
    Push(PushArgs),
    /// Watch a folder scanners drop files into: push each job once it is complete, then move
    /// the originals to .sent/ (or delete them). Survives restarts and server outages.
    Agent(agent::AgentArgs),
    /// Fetch a job's pages back, verified against the job manifest and its signature.
    Get(GetArgs),
    /// Prove a folder holds exactly the pages of a job as signed at commit: offline with the
    /// signed manifest and the tenant's public key, or fetching the manifest with --job.
    Verify(verify::VerifyArgs),
    /// Manage tenants and devices (needs an admin credential).
    Admin(AdminArgs),
    /// Pull every committed job of a tenant not yet delivered, verify it, write it to
    /// `OUT/<job>/`, and acknowledge it (which lets delete-on-delivery delete it). Needs a
    /// tenant-admin credential of that tenant.
    Deliver(DeliverArgs),
    /// Enroll this scanner with a one-time token from `quire admin token create`; it stays
    /// pending until an administrator enables it.
    Enroll(EnrollArgs),
    /// Print a shell completion script (e.g. `quire completions bash >
    /// /etc/bash_completion.d/quire`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, in roff (e.g. `quire manpage > /usr/share/man/man1/quire.1`).
    Manpage,
}

#[derive(Args, Debug)]
struct EnrollArgs {
    /// Server as host:port (a name is resolved and every address tried).
    #[arg(long, default_value = quire_server::config::DEFAULT_LISTEN)]
    server: String,
    /// Name the server's certificate is issued to [default: the host of --server, or
    /// localhost for an IP address].
    #[arg(long)]
    server_name: Option<String>,
    /// The token (qt1.…).
    #[arg(long)]
    token: String,
    /// Device id to register (by default `scanner-` and a random suffix).
    #[arg(long)]
    device_id: Option<String>,
    /// Where to write the credential file (mode 0600).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML configuration file; every key is optional (see README).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:4433, or `listen` in the config].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for metadata, keys, certificates and the local store [default: ./quire-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Check the configuration and reach what it names (TLS files, metadata and vault, every
    /// object store, the spool key directory) without serving; exit 0, or 1 naming what is
    /// wrong. Run it with the server stopped.
    #[arg(long)]
    check: bool,
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// Server as host:port [default: the one in the credential file], or several nodes of one
    /// deployment separated by commas (each client starts at one chosen at random and moves
    /// on when it cannot be reached). A name is resolved, every address tried, and the
    /// server's certificate checked against it.
    #[arg(long, global = true)]
    server: Option<String>,
    /// Credential file [default: ./quire-data/dev/device.cred, or admin.cred for `admin` and
    /// `deliver`].
    #[arg(long, env = "QUIRE_CREDENTIAL", global = true)]
    credential: Option<PathBuf>,
    /// How to reach the server: `quic` (UDP), `tcp` (QUIC carried over TLS over TCP, for
    /// networks that drop UDP), or `auto`: QUIC, and TCP too if QUIC has not connected within
    /// half a second.
    #[arg(long, env = "QUIRE_TRANSPORT", global = true, default_value = "auto")]
    transport: client::transport::Transport,
}

#[derive(Args, Debug)]
struct PushArgs {
    /// Job directories; each becomes one job.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Job id (single directory only) [default: resumed from an unfinished push of the same
    /// directory, else generated].
    #[arg(long)]
    job: Option<String>,
    /// Pages in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Do not draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Directories pushed side by side.
    #[arg(long, default_value_t = 4)]
    parallel_jobs: usize,
    /// Where unfinished and committed pushes are remembered.
    #[arg(long, default_value = ".quire-push")]
    state_dir: PathBuf,
    /// Push directories committed before (with the same pages) again, as new jobs. Without
    /// it they are skipped and their job id is printed.
    #[arg(long)]
    again: bool,
    /// Send the targets of symbolic links as pages (by default links are skipped with a
    /// warning).
    #[arg(long)]
    follow_symlinks: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args, Debug)]
struct GetArgs {
    /// The job to fetch.
    #[arg(long)]
    job: String,
    /// Fetch only this page (0-based index).
    #[arg(long)]
    page: Option<u32>,
    /// Directory to write pages into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// The tenant whose job it is [default: the credential's].
    #[arg(long)]
    tenant: Option<String>,
    /// Why you read: required of operators and support partners (who also need an active
    /// grant of the tenant); recorded in the audit log.
    #[arg(long, default_value = "")]
    reason: String,
    /// Trusted public signing keys: a file `quire admin signing-key export` wrote, or
    /// `sign-N=HEX` [default: the key the server names in the manifest].
    #[arg(long)]
    public_key: Option<String>,
    /// Also write the job's signed manifest here, for `quire verify --manifest` (offline)
    /// or anyone holding the tenant's public key.
    #[arg(long)]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args, Debug)]
struct DeliverArgs {
    /// The tenant whose jobs to deliver.
    #[arg(long)]
    tenant: String,
    /// Directory to deliver into (one sub-directory per job; created if missing).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUIRE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Exit codes a script or supervisor can act on (README, "Exit codes"): 3 try again later,
/// 4 the server refused (fix the credential, its state or the request), 5 a local problem
/// (files, credential file, TLS setup), 1 anything else; clap exits 2 on bad usage.
fn exit_code(e: &anyhow::Error) -> u8 {
    use quire_codecs::wire::ErrorCode as C;
    let credential_file = e
        .chain()
        .any(|c| c.is::<quire_client::credential::CredentialError>());
    if credential_file {
        return 5;
    }
    match e.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
        Some(ClientError::Connect { .. }) => 3,
        Some(ClientError::Refused { code, .. }) => match code {
            C::Busy | C::StoreUnavailable | C::LimitExceeded | C::ServerFull => 3,
            C::Internal => 1,
            _ => 4,
        },
        Some(ClientError::Local { .. } | ClientError::Credential(_) | ClientError::Tls(_)) => 5,
        _ => 1,
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(a) => serve(a).await,
        Command::Push(a) => push(a).await,
        Command::Agent(a) => agent::agent(a).await,
        Command::Get(a) => get(a).await,
        Command::Verify(a) => verify::verify_cmd(a).await,
        Command::Admin(a) => admin(a).await,
        Command::Deliver(a) => deliver(a).await,
        Command::Enroll(a) => enroll(a).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "quire", &mut script);
            print_all(&script)
        }
        Command::Manpage => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            print_all(&page)
        }
    }
}

/// Writes `bytes` to standard output; a reader that went away (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn serve(a: ServeArgs) -> Result<()> {
    let config = ServerConfig::load(a.config.as_deref(), a.listen, a.data_dir)?;
    if a.check {
        let found = quire_server::check::check(&config).await;
        for f in &found {
            println!("{f}");
        }
        let failed = found.iter().filter(|f| f.outcome.is_err()).count();
        if failed > 0 {
            bail!("{failed} of {} checks failed (see above)", found.len());
        }
        println!("configuration ok");
        return Ok(());
    }
    let data_dir = config.data_dir.clone();
    let dev = config.dev_bootstrap;
    let drain_timeout = config.drain_timeout;
    let server = Server::start(config).await?;
    // Written at once and errors ignored: a closed stdout must not take the server down.
    let mut banner = format!(
        "quire listening on {}\ndata directory: {}\n",
        server.local_addr(),
        data_dir.display()
    );
    if dev {
        banner.push_str(&format!(
            "development credentials: {} (scanner), {} (admin)\n",
            data_dir.join(DEV_DEVICE_CRED).display(),
            data_dir.join(DEV_ADMIN_CRED).display()
        ));
    } else {
        banner.push_str(
            "no development credentials (a configured or reachable server): the first \
             administrator comes from `quire admin bootstrap` (server stopped)\n",
        );
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    tokio::select! {
        _ = server.run() => {}
        _ = reload_on_hangup(&server) => {}
        _ = shutdown_signal() => {
            // A second signal while draining exits at once: the spool is crash-safe, and
            // unacknowledged pages are resent by their scanners.
            tokio::select! {
                _ = server.drain(drain_timeout) => {}
                _ = shutdown_signal() => {
                    tracing::warn!("second signal: exiting without finishing the drain");
                    std::process::exit(1);
                }
            }
        }
    }
    Ok(())
}

/// SIGHUP: read the TLS certificate and key again (a renewal), keeping live connections.
async fn reload_on_hangup(server: &Server) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("no SIGHUP handler: certificate renewals need a restart");
        return std::future::pending().await;
    };
    while hangup.recv().await.is_some() {
        if let Err(e) = server.reload_tls() {
            tracing::error!(error = %e, "TLS reload failed; the certificate in use stays (fix the files and send SIGHUP again)");
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn load_credential(c: &ClientArgs, default: &str) -> Result<(Credential, PathBuf)> {
    let path = c
        .credential
        .clone()
        .unwrap_or_else(|| PathBuf::from(quire_server::config::DEFAULT_DATA_DIR).join(default));
    Ok((Credential::load(&path)?, path))
}

async fn connect(c: &ClientArgs, default: &str) -> Result<(Connection, Credential)> {
    client::transport::set_default(c.transport);
    let (cred, path) = load_credential(c, default)?;
    let server = c.server.as_deref().unwrap_or(&cred.server);
    let conn = Connection::connect_to(&cred, server)
        .await
        .with_context(|| format!("connecting as {} ({})", cred.device_id, path.display()))?;
    Ok((conn, cred))
}

/// Times a push reconnects after losing its connection before it gives up.
const MAX_RECONNECTS: usize = 3;

/// Whether `e` is a lost connection, after which the push can go on over a new one.
fn connection_lost(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<client::ClientError>()
            .is_some_and(client::ClientError::is_connection_lost)
    })
}

/// Pushes the directories `which` of `dirs` side by side on the one connection (small jobs
/// are bound by round trips, open and commit, not bandwidth).
async fn push_dirs(
    conn: &Connection,
    dirs: &[PathBuf],
    which: &[usize],
    opts: &PushOptions,
    parallel_jobs: usize,
) -> Vec<(usize, Result<client::push::PushReport>)> {
    futures::stream::iter(which.iter().map(|&i| (i, &dirs[i])))
        .map(|(i, dir)| async move {
            let r = client::push::push_dir(conn, dir, opts)
                .await
                .with_context(|| format!("pushing {}", dir.display()));
            (i, r)
        })
        .buffer_unordered(parallel_jobs.max(1))
        .collect()
        .await
}

async fn push(a: PushArgs) -> Result<()> {
    if a.job.is_some() && a.dirs.len() > 1 {
        bail!(
            "--job names one job, but {} directories were given; push them one at a time",
            a.dirs.len()
        );
    }
    let (mut connection, _) = connect(&a.client, DEV_DEVICE_CRED).await?;
    if connection.transport == client::transport::Transport::Tcp
        && a.client.transport == client::transport::Transport::Auto
    {
        eprintln!("connected over TCP: QUIC over UDP did not get through (QUIC is carried over TLS instead)");
    }
    let opts = PushOptions {
        job: a.job.clone(),
        concurrency: a.concurrency,
        progress: (!a.no_progress).then(indicatif::MultiProgress::new),
        state_dir: a.state_dir.clone(),
        again: a.again,
        follow_symlinks: a.follow_symlinks,
    };
    let mut results = Vec::new();
    let mut pending: Vec<usize> = (0..a.dirs.len()).collect();
    for reconnect in 0..=MAX_RECONNECTS {
        let mut lost = Vec::new();
        for (i, r) in push_dirs(&connection, &a.dirs, &pending, &opts, a.parallel_jobs).await {
            match r {
                Err(e) if reconnect < MAX_RECONNECTS && connection_lost(&e) => lost.push((i, e)),
                r => results.push((i, r)),
            }
        }
        let Some((_, why)) = lost.first() else { break };
        // The push journal resumes each job's upload where it stopped, on whichever node
        // answers now (with --server naming several, another one if this one died).
        eprintln!(
            "{why:#}; reconnecting to resume {} job(s) ({} of {MAX_RECONNECTS})",
            lost.len(),
            reconnect + 1
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        match connect(&a.client, DEV_DEVICE_CRED).await {
            Ok((c, _)) => connection = c,
            Err(e) => {
                eprintln!("{e:#}");
                results.extend(lost.into_iter().map(|(i, e)| (i, Err(e))));
                break;
            }
        }
        pending = lost.into_iter().map(|(i, _)| i).collect();
    }
    results.sort_by_key(|(i, _)| *i);
    let mut jobs = Vec::new();
    let mut failures = Vec::new();
    for (_, r) in results {
        match r {
            Ok(r) if r.already_committed => {
                eprintln!(
                    "job {} already committed from this directory ({} pages); not pushed again (--again pushes it as a new job)",
                    r.job_id, r.pages
                );
                jobs.push(r.job_id);
            }
            Ok(r) => {
                let secs = r.elapsed.as_secs_f64().max(1e-9);
                eprintln!(
                    "job {} committed: {} pages, {} bytes ({} already stored) in {:.2} s, {:.1} pages/s, {:.1} MB/s",
                    r.job_id,
                    r.pages,
                    r.bytes,
                    r.skipped,
                    secs,
                    r.pages as f64 / secs,
                    r.bytes as f64 / secs / 1e6
                );
                jobs.push(r.job_id);
            }
            Err(e) => failures.push(e),
        }
    }
    for j in jobs {
        println!("{j}");
    }
    connection.close().await;
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => {
            for e in &failures {
                eprintln!("error: {e:#}");
            }
            bail!(
                "{n} of {} directories failed; run the same command again to resume them",
                a.dirs.len()
            )
        }
    }
}

async fn get(a: GetArgs) -> Result<()> {
    let (conn, _) = connect(&a.client, DEV_DEVICE_CRED).await?;
    let tenant = a.tenant.clone().unwrap_or_else(|| conn.tenant.clone());
    let fetched = client::get::get_job_for(&conn, &tenant, &a.job, a.page, &a.reason, &a.out)
        .await
        .with_context(|| format!("fetching job {}", a.job))?;
    let asked = verify::Fetch {
        tenant: &tenant,
        job: &a.job,
        reason: &a.reason,
        public_key: a.public_key.as_deref(),
        manifest: a.manifest.as_deref(),
    };
    verify::after_get(&conn, asked, &fetched).await?;
    conn.close().await;
    for f in &fetched {
        println!(
            "{}\t{}\t{}",
            f.path.display(),
            f.entry.size,
            hex::encode(f.entry.sha256)
        );
    }
    eprintln!("{} pages verified against the job manifest", fetched.len());
    Ok(())
}

async fn enroll(a: EnrollArgs) -> Result<()> {
    let token = client::enroll::EnrollToken::parse(&a.token)?;
    let device_id = a.device_id.clone().unwrap_or_else(|| {
        let mut r = [0u8; 4];
        getrandom::fill(&mut r).expect("the OS random source failed");
        format!("scanner-{}", hex::encode(r))
    });
    let cred =
        client::enroll::enroll(&a.server, a.server_name.as_deref(), &token, &device_id).await?;
    cred.save(&a.out)?;
    println!(
        "enrolled device {} of tenant {}; credential written to {}. It stays pending until an administrator runs `quire admin device enable {}`.",
        cred.device_id,
        cred.tenant,
        a.out.display(),
        cred.device_id
    );
    Ok(())
}

async fn deliver(a: DeliverArgs) -> Result<()> {
    let (conn, cred) = connect(&a.client, DEV_ADMIN_CRED).await?;
    if cred.tenant != a.tenant {
        bail!(
            "the credential belongs to tenant {}; delivering tenant {} needs a credential of that tenant",
            cred.tenant,
            a.tenant
        );
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let jobs = client::deliver::pending(&conn, &a.tenant).await?;
    eprintln!("{} jobs waiting for delivery", jobs.len());
    let (mut pages, mut bytes) = (0u64, 0u64);
    let mut delivered = 0usize;
    let mut failed = Vec::new();
    for job in jobs {
        let job_id = job.job_id.clone();
        let d = match client::deliver::deliver_job(&conn, &a.tenant, job, &a.out).await {
            Ok(d) => d,
            // One broken job must not hold back the tenant's others: report it, go on.
            Err(e) if e.is_about_one_job() => {
                eprintln!("job {job_id}: NOT delivered: {e}");
                failed.push(job_id);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        pages += u64::from(d.job.pages);
        bytes += d.job.bytes;
        delivered += 1;
        let outcome = if d.kept_because.is_empty() {
            format!("deleted from quire ({} objects)", d.deleted_objects)
        } else {
            format!("kept: {}", d.kept_because)
        };
        println!(
            "{}\t{}\t{}\t{}\t{outcome}",
            d.job.job_id,
            d.job.pages,
            d.job.bytes,
            d.dir.display()
        );
    }
    conn.close().await;
    eprintln!("{delivered} jobs delivered ({pages} pages, {bytes} bytes), every page verified against its manifest and each signed manifest written beside its job (<job>.manifest.json)");
    if !failed.is_empty() {
        bail!(
            "{} jobs could not be delivered and stay on the server: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
