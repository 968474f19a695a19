//! The server under load when `--server` is not given: started in this process, or as a
//! child `quire serve` (`--child`) so its CPU time and peak memory are its own.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

/// Where the server keeps objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The fsync'd local store, new objects written past the page cache (the default).
    Local,
    /// The same store writing through the page cache (`[store] writes = "cached"`), to
    /// measure what the direct writes change.
    LocalCached,
    /// The server's memory: the server's own cost without a store's.
    Memory,
    S3,
    Azure,
}

/// The store and acknowledgement settings of a started server.
#[derive(Debug, Clone)]
pub struct Setup {
    pub store: StoreKind,
    pub endpoint: Option<String>,
    pub bucket: String,
    pub ack: String,
    /// CPUs a child server may run on (`taskset -c`).
    pub server_cpus: Option<String>,
    /// Where a child server's log goes (its stderr; `RUST_LOG` chooses what it says).
    pub server_log: Option<PathBuf>,
}

/// Azurite's published development key: the default for `--store azure`.
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Setup {
    /// The server's config file. Credentials for S3 and Azure come from
    /// `QUIRE_STORE_ACCESS_KEY` / `QUIRE_STORE_SECRET_KEY`, defaulting to the static test
    /// credentials of moto and Azurite.
    pub fn toml(&self) -> Result<String> {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        // The load test pushes with the development credentials.
        let mut t = format!("[dev]\nbootstrap = true\n[spool]\nack = \"{}\"\n", self.ack);
        match self.store {
            StoreKind::Local => {}
            StoreKind::LocalCached => t += "[store]\nwrites = \"cached\"\n",
            StoreKind::Memory => t += "[store]\nkind = \"memory\"\n",
            StoreKind::S3 => {
                let Some(endpoint) = &self.endpoint else {
                    bail!("--store s3 needs --store-endpoint (e.g. http://127.0.0.1:9000)");
                };
                t += &format!(
                    "[store]\nkind = \"s3\"\nendpoint = \"{endpoint}\"\nregion = \"eu-central-1\"\nbucket = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                    self.bucket,
                    var("QUIRE_STORE_ACCESS_KEY", "quire-test"),
                    var("QUIRE_STORE_SECRET_KEY", "quire-test-secret"),
                );
            }
            StoreKind::Azure => {
                let Some(endpoint) = &self.endpoint else {
                    bail!("--store azure needs --store-endpoint (e.g. http://127.0.0.1:10000/devstoreaccount1)");
                };
                t += &format!(
                    "[store]\nkind = \"azure\"\nendpoint = \"{endpoint}\"\naccount = \"{}\"\naccess_key = \"{}\"\ncontainer = \"{}\"\n",
                    var("QUIRE_STORE_ACCESS_KEY", "devstoreaccount1"),
                    var("QUIRE_STORE_SECRET_KEY", AZURITE_KEY),
                    self.bucket,
                );
            }
        }
        Ok(t)
    }
}

/// A server this tool started.
pub enum Started {
    InProcess {
        server: Arc<quire_server::Server>,
        task: tokio::task::JoinHandle<()>,
    },
    /// A `quire serve` process and its data directory (whose RAM key directory for spool
    /// keys is outside the work directory, so it is removed by hand once the process is gone).
    Child { process: Child, data: PathBuf },
}

impl Started {
    /// Starts a server with `setup` in `dir`; returns it, its address and the dev credential.
    pub async fn start(
        dir: &Path,
        setup: &Setup,
        child: bool,
    ) -> Result<(Started, SocketAddr, PathBuf)> {
        let config = dir.join("quire.toml");
        std::fs::write(&config, setup.toml()?)?;
        let data = dir.join("quire-data");
        let cred = data.join("dev/device.cred");
        if child {
            let bin = std::env::current_exe()?.with_file_name("quire");
            let mut command = match &setup.server_cpus {
                Some(cpus) => {
                    let mut c = Command::new("taskset");
                    c.args(["-c", cpus]).arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            let mut c = command
                .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(&config)
                .arg("--data-dir")
                .arg(&data)
                .stdout(Stdio::piped())
                .stderr(match &setup.server_log {
                    Some(path) => {
                        Stdio::from(std::fs::File::create(path).with_context(|| {
                            format!("creating the server log {}", path.display())
                        })?)
                    }
                    None => Stdio::null(),
                })
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (cargo build --release --bin quire)",
                        bin.display()
                    )
                })?;
            let mut line = String::new();
            BufReader::new(c.stdout.take().expect("piped")).read_line(&mut line)?;
            let addr = line
                .trim()
                .strip_prefix("quire listening on ")
                .with_context(|| format!("unexpected server output {line:?}"))?
                .parse()?;
            Ok((Started::Child { process: c, data }, addr, cred))
        } else {
            let config = quire_server::config::ServerConfig::load(
                Some(&config),
                Some("127.0.0.1:0".parse()?),
                Some(data),
            )?;
            let server = Arc::new(quire_server::Server::start(config).await?);
            let addr = server.local_addr();
            let s = server.clone();
            let task = tokio::spawn(async move { s.run().await });
            Ok((Started::InProcess { server, task }, addr, cred))
        }
    }

    /// The process whose resources are the server's ("self" when in process).
    pub fn pid(&self) -> String {
        match self {
            Started::InProcess { .. } => "self".into(),
            Started::Child { process, .. } => process.id().to_string(),
        }
    }

    pub fn in_process(&self) -> bool {
        matches!(self, Started::InProcess { .. })
    }

    pub async fn stop(self) {
        match self {
            Started::InProcess { server, task } => {
                task.abort();
                server.shutdown().await;
            }
            Started::Child { mut process, data } => {
                let _ = process.kill();
                let _ = process.wait();
                let keys = quire_pipeline::spool::keydir::default_key_dir(&data);
                let _ = std::fs::remove_dir_all(keys);
            }
        }
    }
}

/// Peak resident memory of a process, MiB.
pub fn peak_rss_mib(pid: &str) -> Option<f64> {
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

/// CPU time (user + system) a process has used, seconds. Linux reports it in USER_HZ ticks,
/// which are 1/100 s on every architecture Rust supports.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Context switches (voluntary and involuntary) of every live thread of a process: each is a
/// thread going to sleep or being preempted, the cost of hand-offs between thread pools. A
/// thread that exits takes its count with it, so read this while the process's pools are busy.
pub fn context_switches(pid: &str) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(status) = std::fs::read_to_string(task.ok()?.path().join("status")) else {
            continue; // the thread exited since the listing
        };
        total += status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// CPU time of the child server and of this process, and the server's peak memory, over a run.
pub(crate) struct Usage {
    server_pid: Option<String>,
    server_cpu_before: Option<f64>,
    server_switches_before: Option<u64>,
    own_cpu_before: Option<f64>,
}

/// What [`Usage::finish`] measured.
pub(crate) struct Used {
    pub server_cpu_s: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub server_switches: Option<u64>,
    pub own_cpu_s: Option<f64>,
}

impl Usage {
    pub(crate) fn start(server_pid: Option<String>) -> Usage {
        Usage {
            server_cpu_before: server_pid.as_deref().and_then(cpu_seconds),
            server_switches_before: server_pid.as_deref().and_then(context_switches),
            own_cpu_before: cpu_seconds("self"),
            server_pid,
        }
    }

    /// Server CPU seconds, peak RSS and context switches, and this process's CPU seconds,
    /// since start.
    pub(crate) fn finish(&self) -> Used {
        let pid = self.server_pid.as_deref();
        Used {
            server_cpu_s: pid
                .and_then(cpu_seconds)
                .zip(self.server_cpu_before)
                .map(|(after, before)| after - before),
            server_rss_mb: pid.and_then(peak_rss_mib),
            server_switches: pid
                .and_then(context_switches)
                .zip(self.server_switches_before)
                .map(|(after, before)| after.saturating_sub(before)),
            own_cpu_s: cpu_seconds("self")
                .zip(self.own_cpu_before)
                .map(|(after, before)| after - before),
        }
    }
}
