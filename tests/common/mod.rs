//! Test harness: a real Quire server in a temporary directory, either a `quire serve` child
//! process (where the process boundary is the point: crash, kill -9, its log, its memory) or
//! the same `Server` in process on a thread of its own (the request-layer tests), and helpers
//! to run the real CLI against it from that directory (so its defaults are what is tested).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use quire_client::credential::{Credential, CredentialFile};
use quire_client::{Connection, Login};
use quire_codecs::wire::ALPN;

pub mod background;
pub mod delay;
pub mod moto;
pub mod netns;
pub mod pki;
pub mod postgres;

pub const BIN: &str = env!("CARGO_BIN_EXE_quire");

/// The shared sample corpus (`../shared/corpus` beside the checkout, or `QUIRE_CORPUS`).
pub fn corpus() -> PathBuf {
    let p = std::env::var_os("QUIRE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    assert!(
        p.join("MANIFEST.tsv").exists(),
        "sample corpus not found at {} (set QUIRE_CORPUS)",
        p.display()
    );
    p
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Kept open so the server can keep writing to its stdout.
    stdout: Option<BufReader<std::process::ChildStdout>>,
    /// Whether to pass `--config quire.toml`.
    config: bool,
    pub log: PathBuf,
    /// The in-process server's thread and the signal that stops it.
    in_process: Option<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

impl TestServer {
    /// Starts `quire serve` on a free loopback port with its data in a fresh directory.
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir)
    }

    /// Starts `quire serve --config quire.toml` with `toml` as the file's contents (and the
    /// development credentials the harness works with, unless `toml` has a `[dev]` section).
    pub fn start_with_config(toml: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("quire.toml"), with_dev_bootstrap(toml)).unwrap();
        let mut s = TestServer {
            log: dir.path().join("serve.log"),
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            stdout: None,
            config: true,
            in_process: None,
        };
        s.spawn("127.0.0.1:0");
        s
    }

    pub fn start_in(dir: tempfile::TempDir) -> TestServer {
        let log = dir.path().join("serve.log");
        let mut s = TestServer {
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            stdout: None,
            config: false,
            log,
            in_process: None,
        };
        s.spawn("127.0.0.1:0");
        s
    }

    /// The real server on its embedded defaults, in this process on a thread and runtime of
    /// its own (no child process, no log file: `kill`, `restart`, `pid` and the log are for
    /// child servers).
    pub fn in_process() -> TestServer {
        Self::in_process_with("", std::sync::Arc::new(quire_server::clock::SystemClock))
    }

    /// [`TestServer::in_process`] with `toml` as its configuration file and retention going
    /// by `clock`.
    pub fn in_process_with(
        toml: &str,
        clock: std::sync::Arc<dyn quire_server::clock::Clock>,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("quire-data");
        let config_file = dir.path().join("quire.toml");
        std::fs::write(&config_file, with_dev_bootstrap(toml)).unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let config = quire_server::config::ServerConfig::load(
                    Some(&config_file),
                    Some("127.0.0.1:0".parse().unwrap()),
                    Some(data_dir),
                )
                .unwrap();
                let server = quire_server::Server::start_with_clock(config, clock);
                let server = std::sync::Arc::new(server.await.unwrap());
                addr_tx.send(server.local_addr()).unwrap();
                let running = {
                    let s = server.clone();
                    tokio::spawn(async move { s.run().await })
                };
                let _ = stop_rx.await;
                server.shutdown().await;
                let _ = running.await;
            });
        });
        let addr = addr_rx.recv().expect("in-process server started");
        TestServer {
            log: dir.path().join("serve.log"),
            dir,
            addr,
            child: None,
            stdout: None,
            config: false,
            in_process: Some((thread, stop_tx)),
        }
    }

    fn spawn(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut args = vec!["serve", "--listen", listen];
        if self.config {
            args.extend(["--config", "quire.toml"]);
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .current_dir(self.dir.path())
            .env("QUIRE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn quire serve");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("quire listening on ")
            .unwrap_or_else(|| {
                panic!("unexpected serve output {line:?}; log: {}", self.log_text())
            });
        self.addr = addr.parse().unwrap();
        self.child = Some(child);
        self.stdout = Some(reader);
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The old sockets may linger for a moment: the QUIC port's and the TCP port's
            // (the same number; a restart once found the TCP one still taken).
            let free = std::net::UdpSocket::bind(self.addr).is_ok()
                && std::net::TcpListener::bind(self.addr).is_ok();
            if free || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn(&listen);
    }

    pub fn kill(&mut self) {
        if let Some((thread, stop)) = self.in_process.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `limit` for the child server to exit on its own; its status, or `None`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `sig` (`-STOP`, `-CONT`, `-HUP`, `-TERM`) to the child server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} quire");
    }

    /// Peak resident memory of the server so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store_dir(&self) -> PathBuf {
        self.path().join("quire-data/store")
    }

    pub fn device_cred(&self) -> Credential {
        Credential::load(&self.path().join("quire-data/dev/device.cred")).unwrap()
    }

    pub fn admin_cred_path(&self) -> PathBuf {
        self.path().join("quire-data/dev/admin.cred")
    }

    /// Issues a credential for a new device of `tenant` as the development service admin,
    /// through the real CLI, and returns the credential file; panics if refused.
    pub fn create_device(&self, tenant: &str, id: &str, role: &str, enable: bool) -> PathBuf {
        let cred = self.path().join(format!("{id}.cred"));
        let admin = self.admin_cred_path();
        let mut args = vec![
            "admin",
            "--credential",
            admin.to_str().unwrap(),
            "device",
            "create",
            "--tenant",
            tenant,
            "--id",
            id,
            "--role",
            role,
            "--out",
            cred.to_str().unwrap(),
        ];
        if enable {
            args.push("--enable");
        }
        let o = self.quire(&args);
        assert!(
            o.status.success(),
            "creating {id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        cred
    }

    /// A one-time enrollment token for `tenant`, from `quire admin token create` run with the
    /// credential at `admin`.
    pub fn token(&self, admin: &str, tenant: &str) -> String {
        let o = self.quire(&[
            "admin",
            "--credential",
            admin,
            "token",
            "create",
            "--tenant",
            tenant,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        last_line(&o.stdout)
    }

    /// `quire admin device enable DEVICE` with the credential at `admin`; panics on failure.
    pub fn enable_device(&self, admin: &str, device: &str) {
        let o = self.quire(&["admin", "--credential", admin, "device", "enable", device]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// `quire push JOB --credential CRED --no-progress`, its output whatever it is.
    pub fn push_as(&self, job: &Path, cred: &Path) -> Output {
        self.quire(&[
            "push",
            job.to_str().unwrap(),
            "--credential",
            cred.to_str().unwrap(),
            "--no-progress",
        ])
    }

    /// Runs the real CLI from the server's directory.
    pub fn quire(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .output()
            .expect("run quire")
    }

    /// Runs `quire ARGS…`, which must succeed; its stdout.
    pub fn quire_ok(&self, args: &[&str]) -> String {
        let o = self.quire(args);
        assert!(
            o.status.success(),
            "quire {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `quire get` of `job` into `out`, writing its signed manifest to `manifest`, which must
    /// succeed; what it printed (stdout and stderr).
    pub fn get_with_manifest(&self, job: &str, out: &Path, manifest: &Path) -> String {
        let o = self.quire(&[
            "get",
            "--job",
            job,
            "--out",
            out.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "quire get {job}: {said}");
        said
    }

    /// Pushes one directory and returns the job id (last stdout line); panics on failure.
    pub fn push_ok(&self, dir: &Path, extra: &[&str]) -> String {
        let mut args = vec!["push", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.quire(&args);
        assert!(
            out.status.success(),
            "push {} failed: {}\nserver log:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        last_line(&out.stdout)
    }

    /// Fetches a job into `out` and panics on failure.
    pub fn get_ok(&self, job: &str, out: &Path) {
        let o = self.quire(&["get", "--job", job, "--out", out.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "get {job} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Fetches one page of a job into `out` with the real CLI.
    pub fn get_page(&self, job: &str, page: u32, out: &Path) -> Output {
        let page = page.to_string();
        self.quire(&[
            "get",
            "--job",
            job,
            "--page",
            &page,
            "--out",
            out.to_str().unwrap(),
        ])
    }

    /// An authenticated in-process connection with the development device credential.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.device_cred(), Some(self.addr))
            .await
            .unwrap()
    }

    /// Connects with explicit, possibly wrong, parameters.
    pub async fn login(
        &self,
        tenant: &str,
        device: &str,
        secret: [u8; 32],
        alpn: &[u8],
    ) -> Result<Connection, quire_client::ClientError> {
        let cred = self.device_cred();
        Connection::login(Login {
            addr: self.addr,
            server_name: &cred.server_name,
            ca_pem: &cred.server_ca,
            alpn,
            tenant,
            device_id: device,
            secret,
        })
        .await
    }

    pub fn dev_secret(&self) -> [u8; 32] {
        *self.device_cred().secret_bytes().unwrap()
    }

    /// Every sealed object in the object store: documents and manifests, not the audit
    /// checkpoints under `audit/` (tests/audit_chain.rs checks those), the public signing
    /// keys under `signing/` (tests/signed_manifests.rs) nor backups (tests/backup.rs).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let audit = self.store_dir().join("audit");
        let others = ["signing", "backups"].map(|d| self.store_dir().join(d));
        walk(&self.store_dir())
            .into_iter()
            .filter(|f| !f.starts_with(&audit) && !others.iter().any(|o| f.starts_with(o)))
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        // The spool keys of a server with default settings live in RAM (a runtime directory
        // or /dev/shm), outside the temporary directory: remove that directory too.
        let data_dir = self.path().join("quire-data");
        if data_dir.exists() {
            let keys = quire_pipeline::spool::keydir::default_key_dir(&data_dir);
            if !keys.starts_with(&data_dir) {
                let _ = std::fs::remove_dir_all(keys);
            }
        }
    }
}

pub fn default_alpn() -> &'static [u8] {
    ALPN
}

pub fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(p) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

pub fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Fills a file with `len` pseudo-random (incompressible) bytes from `seed`, streaming.
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        rng.fill(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// Whether `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs the CLI. A command still running after 60 s is killed, so that a command that should
/// have exited (a config that should have been refused) fails the test instead of hanging it.
pub fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (
        status.success(),
        String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    )
}

/// The Python with the third-party SDKs and moto that scripts/test.sh installs.
pub fn python() -> String {
    std::env::var("QUIRE_PYTHON").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/interop-venv/bin/python")
            .display()
            .to_string()
    })
}

/// Runs a Python snippet with the third-party SDKs; panics with its output on failure.
pub fn third_party(script: &str, args: &[&str]) -> String {
    let o = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts every file of directory `a` is in `b` with the same bytes.
pub fn same_files(a: &Path, b: &Path) {
    for f in walk(a) {
        let other = b.join(f.file_name().unwrap());
        assert!(
            std::fs::read(&f).unwrap() == std::fs::read(&other).unwrap(),
            "{} differs from {}",
            f.display(),
            other.display()
        );
    }
}

/// A configuration file turns the development credentials off by default; the harness works
/// with them, so it asks for them unless the test's text says otherwise in a `[dev]` section.
pub fn with_dev_bootstrap(toml: &str) -> String {
    if toml.contains("[dev]") {
        toml.to_string()
    } else {
        format!("{toml}\n[dev]\nbootstrap = true\n")
    }
}

/// An environment variable `scripts/test-servers.sh` sets (the endpoints of the S3, Azure, KMS
/// and HSM test servers it starts); a clear failure when the tests run without it.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which installs and starts the servers they need")
    })
}

/// Initialises a SoftHSM2 token `label` with user PIN `pin`, in the token directory
/// `scripts/test-servers.sh` made (`SOFTHSM2_CONF`). A server started afterwards sees it.
pub fn softhsm_token(label: &str, pin: &str) {
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", "11223344", "--pin", pin])
        .output()
        .expect("softhsm2-util runs (scripts/test-servers.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback TCP port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.1: the status code and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    use std::io::{Read, Write};
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: quire\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A QUIC server configuration with a development identity made in `dir` (the server's own
/// TLS setup, without a server behind it), and that identity, whose certificate clients trust.
pub fn dev_quic_server_config(
    dir: &Path,
) -> (quinn::ServerConfig, quire_server::identity::Identity) {
    let id = quire_server::identity::Identity::dev(dir).unwrap();
    let certs = std::sync::Arc::new(quire_server::identity::CertResolver::new(&id).unwrap());
    (quire_server::identity::server_config(certs).unwrap(), id)
}

/// A QUIC server endpoint on loopback with the dev identity and the server's real transport
/// settings, and a client endpoint that trusts it with a scanner's transport settings (for
/// tests of the transport itself, below the request layer). Needs a Tokio runtime.
pub fn quic_endpoints(dir: &Path) -> (quinn::Endpoint, quinn::Endpoint) {
    quic_endpoints_with(dir, |_| {})
}

/// [`quic_endpoints`] with the server's transport settings changed by `adjust`.
pub fn quic_endpoints_with(
    dir: &Path,
    adjust: impl FnOnce(&mut quinn::TransportConfig),
) -> (quinn::Endpoint, quinn::Endpoint) {
    let (mut server_config, id) = dev_quic_server_config(dir);
    let config = quire_server::config::ServerConfig::load(None, None, None).unwrap();
    let mut transport = quire_server::transport_config(&config);
    adjust(&mut transport);
    server_config.transport_config(std::sync::Arc::new(transport));
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client_config =
        quire_client::tls::client_config(&id.cert_pem, quire_codecs::wire::ALPN).unwrap();
    client_config.transport_config(std::sync::Arc::new(quire_client::transport_config()));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config);
    (server, client)
}
