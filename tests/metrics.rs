//! The operator's HTTP listener against a real server: `/metrics` counts what a push stored
//! and what was refused, and passes `promtool check metrics`; `/healthz` answers; `/readyz`
//! turns unready while the object store (a moto S3 server of this test's own) is down and
//! ready again once it is back; datagrams the kernel drops from the QUIC socket's buffer are
//! counted, and a server the kernel caps says so; the credit granted to connected scanners is
//! reported; `--log-format json` writes one JSON object per line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::moto::Moto;
use crate::common::*;
use quire_client::credential::CredentialFile;

fn wait_for(addr: SocketAddr, path: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((status, body)) = http_get(addr, path) {
            if status == want {
                return body;
            }
            assert!(Instant::now() < deadline, "{path}: {status} {body}");
        }
        assert!(Instant::now() < deadline, "{path} never answered {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample whose name and labels start with `series` (0 if absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn promtool_accepts(metrics: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/test.sh installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pages_of(dir: &Path) -> (usize, u64) {
    let files = walk(dir);
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    (files.len(), bytes)
}

#[test]
fn metrics_count_a_push_and_readiness_follows_the_store() {
    let mut moto = Moto::start("readyz");
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = TestServer::start_with_config(&format!(
        "[metrics]\nlisten = \"{metrics_addr}\"\n[store]\n{}",
        moto.store_toml()
    ));
    assert_eq!(wait_for(metrics_addr, "/healthz", 200), "ok\n");
    wait_for(metrics_addr, "/readyz", 200);
    let before = wait_for(metrics_addr, "/metrics", 200);
    // Every audit record counts, not only those of requests: the server's start is one.
    assert!(
        sample(&before, "quire_audit_records_total ") >= 1.0,
        "{before}"
    );

    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let (pages, bytes) = pages_of(&samples);
    server.push_ok(&samples, &["--no-progress"]);
    // A scanner with a wrong secret: one authentication failure.
    let mut forged = server.device_cred();
    forged.secret = "ab".repeat(32);
    let forged_path = server.path().join("forged.cred");
    forged.save(&forged_path).unwrap();
    assert!(!server.push_as(&samples, &forged_path).status.success());

    let after = wait_for(metrics_addr, "/metrics", 200);
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved("quire_pages_total{outcome=\"stored\",tenant=\"dev\"}"),
        pages as f64,
        "{after}"
    );
    assert_eq!(
        moved("quire_page_bytes_total{tenant=\"dev\"}"),
        bytes as f64
    );
    assert!(moved("quire_stored_bytes_total{tenant=\"dev\"}") > 0.0);
    assert_eq!(moved("quire_page_seconds_count"), pages as f64);
    assert!(moved("quire_auth_failures_total") >= 1.0, "{after}");
    assert_eq!(sample(&after, "quire_connections_authenticating "), 0.0);
    assert!(after.contains("# TYPE quire_connections_authenticating gauge"));
    // Every stage timed each new page once; logins are timed too.
    for stage in ["hash", "compress", "seal", "spool", "store", "ack"] {
        let series = format!("quire_stage_seconds_count{{stage=\"{stage}\"}}");
        assert_eq!(moved(&series), pages as f64, "{series}: {after}");
    }
    assert!(moved("quire_stage_seconds_count{stage=\"authenticate\"}") >= 1.0);
    // The samples: two JPEG, two PNG, one TIFF; JPEG and PNG are never compressed again.
    assert_eq!(
        moved("quire_pages_by_format_total{compression=\"none\",format=\"jpeg\"}"),
        2.0,
        "{after}"
    );
    assert_eq!(
        moved("quire_pages_by_format_total{compression=\"none\",format=\"png\"}"),
        2.0
    );
    let tiff: f64 = ["none", "zstd"]
        .iter()
        .map(|c| {
            moved(&format!(
                "quire_pages_by_format_total{{compression=\"{c}\",format=\"tiff\"}}"
            ))
        })
        .sum();
    assert_eq!(tiff, 1.0);
    assert_eq!(sample(&after, "quire_spool_oldest_seconds "), 0.0);
    promtool_accepts(&after);

    // The store goes down: unready, naming it; a page pushed now waits in the spool, its
    // failed writes counted; back up: ready, the page delivered after retries.
    moto.stop();
    let body = wait_for(metrics_addr, "/readyz", 503);
    assert!(body.contains("object store"), "{body}");
    assert_eq!(wait_for(metrics_addr, "/healthz", 200), "ok\n");
    let late = server.path().join("late");
    std::fs::create_dir(&late).unwrap();
    std::fs::write(late.join("page.txt"), "a page pushed during the outage").unwrap();
    let pushing = std::process::Command::new(BIN)
        .args(["push", late.to_str().unwrap(), "--no-progress"])
        .current_dir(server.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Spooled, and its delivery tried and failed at least once while the store is down: the
    // store comes back only then (if it came back sooner, the object store client's own
    // retries could finish the first attempt and no retry would be counted).
    let during = loop {
        let text = wait_for(metrics_addr, "/metrics", 200);
        if sample(&text, "quire_spool_oldest_seconds ") > 0.0
            && sample(&text, "quire_delivery_retries_total ") >= 1.0
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "nothing spooled and retried: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let failed: f64 = ["unavailable", "timeout"]
        .iter()
        .map(|k| {
            sample(
                &during,
                &format!("quire_store_errors_total{{kind=\"{k}\"}}"),
            )
        })
        .sum();
    assert!(failed >= 1.0, "{during}");
    let _moto = Moto::start_on(moto.port, "readyz");
    wait_for(metrics_addr, "/readyz", 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = wait_for(metrics_addr, "/metrics", 200);
        if sample(&text, "quire_spool_records ") == 0.0 {
            assert!(
                sample(&text, "quire_delivery_retries_total ") >= 1.0,
                "{text}"
            );
            assert_eq!(sample(&text, "quire_spool_oldest_seconds "), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "the spool did not drain: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut pushing = pushing;
    let _ = pushing.kill();
    let _ = pushing.wait();
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    // A server's start and stop: its log lines are JSON objects with a level and fields.
    let server = std::process::Command::new(BIN)
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let out = server.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}

/// The QUIC socket asks for a large receive buffer, and what the kernel drops from it when
/// the server cannot read in time is counted: a server stopped (SIGSTOP) while datagrams
/// arrive overflows its buffer, and `/metrics` shows the drops once it runs again.
#[test]
fn the_quic_sockets_buffer_and_its_drops_are_on_the_metrics() {
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server =
        TestServer::start_with_config(&format!("[metrics]\nlisten = \"{metrics_addr}\"\n"));
    let before = wait_for(metrics_addr, "/metrics", 200);
    let buffer = sample(&before, "quire_udp_receive_buffer_bytes ");
    // Linux reports twice the size set; the kernel's default is 208 KiB (416 KiB reported).
    assert!(buffer > 425_984.0, "{before}");
    if rustix::process::geteuid().is_root() {
        assert!(buffer >= quire_net::udp::RECEIVE_BUFFER as f64, "{buffer}");
    }
    assert_eq!(sample(&before, "quire_udp_receive_drops_total "), 0.0);

    server.signal("-STOP");
    let flood = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Twice what the buffer can hold, even counting each datagram at its payload alone.
    let datagrams = (2.0 * buffer / 1200.0) as usize;
    for _ in 0..datagrams {
        // A full buffer makes the kernel drop, not the sender fail.
        let _ = flood.send_to(&[0x40; 1200], server.addr);
    }
    server.signal("-CONT");
    let after = wait_for(metrics_addr, "/metrics", 200);
    let drops = sample(&after, "quire_udp_receive_drops_total ");
    assert!(
        drops > 0.0 && drops < datagrams as f64,
        "{drops} of {datagrams}: {after}"
    );
    promtool_accepts(&after);
    // Still serving: the garbage was read and dropped.
    server.push_ok(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job"),
        &["--no-progress"],
    );
}

/// A server without the privilege to exceed the kernel's cap, as `dist/quire.service` runs it
/// (here: user nobody, no capabilities), gets the capped buffer, says so at start with the
/// sysctl that lifts the cap, and reports the buffer it has.
#[test]
fn a_server_the_kernel_caps_says_so_and_reports_what_it_got() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test becomes user nobody: run the suite as root (scripts/test.sh does)"
    );
    let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("quire.toml");
    std::fs::write(
        &config,
        with_dev_bootstrap(&format!("[metrics]\nlisten = \"{metrics_addr}\"\n")),
    )
    .unwrap();
    for path in [dir.path(), &config] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    }
    let log = dir.path().join("serve.log");
    let mut server = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all", BIN])
        .args(["serve", "--listen", "127.0.0.1:0", "--config", "quire.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let metrics = wait_for(metrics_addr, "/metrics", 200);
    let _ = server.kill();
    let _ = server.wait();
    let granted = sample(&metrics, "quire_udp_receive_buffer_bytes ") as usize;
    let wanted = quire_net::udp::RECEIVE_BUFFER;
    // Linux caps the size set (half the size reported) at rmem_max.
    assert_eq!(granted, (wanted / 2).min(cap) * 2, "{metrics}");
    let text = std::fs::read_to_string(&log).unwrap();
    let warned = text.contains("net.core.rmem_max=16777216");
    assert_eq!(
        warned,
        granted < wanted,
        "cap {cap}, granted {granted}: {text}"
    );
}

/// What connected scanners may make the server buffer is on the metrics: a scanner alone has
/// the whole 16 MiB share, none of it grown; gone, it holds nothing.
#[test]
fn the_credit_granted_to_scanners_is_on_the_metrics() {
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server =
        TestServer::start_with_config(&format!("[metrics]\nlisten = \"{metrics_addr}\"\n"));
    let before = wait_for(metrics_addr, "/metrics", 200);
    assert_eq!(sample(&before, "quire_receive_credit_bytes "), 0.0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conn = rt.block_on(server.connect());
    let connected = http_get(metrics_addr, "/metrics").unwrap().1;
    assert_eq!(
        sample(&connected, "quire_receive_credit_bytes "),
        quire_server::windows::MAX_CONNECTION_WINDOW as f64,
        "{connected}"
    );
    assert_eq!(sample(&connected, "quire_receive_credit_grown_bytes "), 0.0);
    promtool_accepts(&connected);
    rt.block_on(conn.close());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = http_get(metrics_addr, "/metrics").unwrap().1;
        if sample(&now, "quire_receive_credit_bytes ") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still granted after the close: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
