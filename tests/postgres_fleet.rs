//! A fleet on three nodes sharing one PostgreSQL database and one object store: six scanners
//! naming all three push at once, one node is killed with SIGKILL mid-job, its scanners fail
//! over and finish, every page is stored exactly once and reads back byte-identical, and a
//! device disabled through one surviving node is cut off on the other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::postgres::{fresh_database, psql};
use crate::common::*;
use crate::postgres_nodes::{closed_within, job_open, meta_toml, pages_acknowledged, second_node};
use quire_client::credential::{Credential, CredentialFile};
use quire_client::{Connection, Login};
use quire_codecs::wire::ALPN;

const SCANNERS: usize = 6;
const PAGES: usize = 40;

fn metrics_at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Scanner `i`'s job folder under `dir`: PAGES pages of 150 kB.
fn job_of(dir: &std::path::Path, i: usize) -> PathBuf {
    let job = dir.join(format!("job-{i}"));
    std::fs::create_dir(&job).unwrap();
    for p in 0..PAGES {
        write_random_file(
            &job.join(format!("p{p:03}.tif")),
            150_000,
            (1000 * i + p) as u64,
        );
    }
    job
}

#[test]
fn six_scanners_on_three_nodes_survive_the_loss_of_one() {
    let url = fresh_database();
    let ports = [free_port(), free_port(), free_port()];
    // Each scanner paced to 2 MB/s, so its 6 MB job is still going when the node is killed.
    let extra = |port: u16| {
        format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[limits]\ndevice_bytes_per_sec = 2000000\n"
        )
    };
    let first = TestServer::start_with_config(&format!("{}{}", meta_toml(&url), extra(ports[0])));
    let mut nodes = vec![first];
    for port in &ports[1..] {
        let n = second_node(&nodes[0], &url, &extra(*port));
        nodes.push(n);
    }
    let dir = nodes[0].path().to_path_buf();
    let servers = nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let jobs: Vec<PathBuf> = (0..SCANNERS).map(|i| job_of(&dir, i)).collect();
    let creds: Vec<PathBuf> = (0..SCANNERS)
        .map(|i| nodes[0].create_device("dev", &format!("scanner-{i}"), "device", true))
        .collect();

    // Six scanners, each naming the three nodes (each starts at one chosen at random).
    let pushes: Vec<Child> = (0..SCANNERS)
        .map(|i| {
            Command::new(BIN)
                .args(["push", jobs[i].to_str().unwrap(), "--no-progress"])
                .args(["--concurrency", "2", "--server", &servers])
                .args(["--credential", creds[i].to_str().unwrap()])
                .current_dir(&dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    // Once the fleet is under way, kill the node that has taken the most pages.
    let deadline = Instant::now() + Duration::from_secs(60);
    let acked = loop {
        let acked: Vec<u64> = ports
            .iter()
            .map(|p| pages_acknowledged(metrics_at(*p)))
            .collect();
        if acked.iter().sum::<u64>() >= 30 {
            break acked;
        }
        assert!(Instant::now() < deadline, "the fleet did not get going");
        std::thread::sleep(Duration::from_millis(50));
    };
    let victim = (0..3).max_by_key(|&k| acked[k]).unwrap();
    eprintln!("pages acknowledged per node {acked:?}; killing node {victim}");
    nodes[victim].kill();
    let survivors: Vec<usize> = (0..3).filter(|&k| k != victim).collect();

    let mut job_ids = Vec::new();
    for (i, p) in pushes.into_iter().enumerate() {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "scanner {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        job_ids.push(last_line(&out.stdout));
    }
    let after: Vec<u64> = survivors
        .iter()
        .map(|&k| pages_acknowledged(metrics_at(ports[k])))
        .collect();
    eprintln!("after the kill the survivors had acknowledged {after:?}");

    // Every page of every job once: one row each, one object each.
    assert_eq!(
        psql(&url, "SELECT count(*) FROM pages"),
        (SCANNERS * PAGES).to_string()
    );
    for (i, job_id) in job_ids.iter().enumerate() {
        assert_eq!(
            psql(
                &url,
                &format!("SELECT committed, page_count FROM jobs WHERE job = '{job_id}'")
            ),
            format!("t|{PAGES}")
        );
        let objects = dir.join(format!("quire-data/store/tenants/dev/jobs/{job_id}/pages"));
        let files = walk(&objects);
        assert_eq!(files.len(), PAGES, "objects of job {i}: {files:?}");
        let reader = &nodes[survivors[i % 2]];
        let out = dir.join(format!("restored-{i}"));
        let o = nodes[0].quire(&[
            "get",
            "--job",
            job_id,
            "--out",
            out.to_str().unwrap(),
            "--server",
            &reader.addr.to_string(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        same_files(&jobs[i], &out);
    }

    // A device disabled through one surviving node is cut off on the other.
    let (through, on) = (&nodes[survivors[0]], &nodes[survivors[1]]);
    let cred = Credential::load(&creds[0]).unwrap();
    let ca = std::fs::read_to_string(dir.join("quire-data/tls/dev-cert.pem")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live = rt.block_on(async {
        Connection::login(Login {
            addr: on.addr,
            server_name: "localhost",
            ca_pem: &ca,
            alpn: ALPN,
            tenant: "dev",
            device_id: "scanner-0",
            secret: *cred.secret_bytes().unwrap(),
        })
        .await
        .unwrap()
    });
    let admin = nodes[0].admin_cred_path();
    let t = Instant::now();
    let o = nodes[0].quire(&[
        "admin",
        "--credential",
        admin.to_str().unwrap(),
        "--server",
        &through.addr.to_string(),
        "device",
        "disable",
        "scanner-0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let took = rt.block_on(closed_within(&live, t, Duration::from_secs(5)));
    eprintln!("disabled through one node, cut off on another {took:?} after the command started");
    // Under 5 s only the notification can do it (the safety poll runs every 10 s).
    assert!(
        took.is_some(),
        "the other node kept serving a disabled device"
    );
    let e = rt.block_on(job_open(&live)).unwrap_err().to_string();
    assert!(e.contains("was disabled by an administrator"), "{e}");
}

/// `quire-loadtest --server A,B` spreads its scanners over both nodes and reports each
/// node's part; every job it pushed is verified.
#[test]
fn the_load_test_reports_each_node() {
    let loadtest = std::path::Path::new(BIN).with_file_name("quire-loadtest");
    assert!(
        loadtest.exists(),
        "build the load generator first (cargo build -p quire-loadtest)"
    );
    let url = fresh_database();
    let a = TestServer::start_with_config(&meta_toml(&url));
    let b = second_node(&a, &url, "");
    let out = Command::new(&loadtest)
        .args(["--server", &format!("{},{}", a.addr, b.addr)])
        .args(["--credential", "quire-data/dev/device.cred"])
        .args(["--generate", "50k:2,500k:1", "--pages-per-job", "3"])
        .args(["--generated-jobs", "4", "--scanners", "4", "--jobs", "1"])
        .current_dir(a.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(
        (report["pages"].as_u64(), report["verified"].as_bool()),
        (Some(12), Some(true)),
        "{report}"
    );
    let nodes = report["nodes"].as_array().expect("a part per node");
    assert_eq!(nodes.len(), 2, "{report}");
    for (node, addr) in nodes.iter().zip([a.addr, b.addr]) {
        assert_eq!(node["addr"], addr.to_string());
        assert_eq!(node["connections"], 2, "{report}");
        assert_eq!(node["pages"], 6, "{report}");
    }
}
