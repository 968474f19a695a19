//! Two `quire serve` nodes sharing one PostgreSQL database (a real server, started on
//! loopback by scripts/test-servers.sh): a device disabled through one node is cut off on
//! the other, by LISTEN/NOTIFY, and a change made while the listening connection is down is
//! caught up, not lost.

use std::time::{Duration, Instant};

use crate::common::postgres::{fresh_database, psql};
use crate::common::*;
use quire_client::credential::{Credential, CredentialFile};
use quire_client::{Connection, Login};
use quire_codecs::wire::{Frame, ALPN};

pub(crate) fn meta_toml(url: &str) -> String {
    format!("[meta]\nkind = \"postgres\"\nurl = \"{url}\"\n")
}

/// Waits (until `limit` after `t`) for the connection to be closed by the server; how long
/// after `t` it was.
pub(crate) async fn closed_within(
    conn: &Connection,
    t: Instant,
    limit: Duration,
) -> Option<Duration> {
    while t.elapsed() < limit {
        if conn.is_closed() {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

pub(crate) async fn job_open(conn: &Connection) -> Result<Frame, quire_client::ClientError> {
    conn.call(&Frame::JobOpen {
        tenant: "dev".into(),
        job_id: "j".into(),
        upload: None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_disabled_on_one_node_is_cut_off_on_the_other() {
    let url = fresh_database();
    let a = TestServer::start_with_config(&meta_toml(&url));
    // Node B shares the database; node A made the development credentials.
    let b = TestServer::start_with_config(&format!(
        "{}[dev]\nbootstrap = false\n[vault]\nallow_master_key_in_data_dir = true\n",
        meta_toml(&url)
    ));
    let b_ca = std::fs::read_to_string(b.path().join("quire-data/tls/dev-cert.pem")).unwrap();
    let admin = a.admin_cred_path();
    let admin = admin.to_str().unwrap();
    let connect_to_b = |id: &'static str| {
        let cred = Credential::load(&a.create_device("dev", id, "device", true)).unwrap();
        let ca = b_ca.clone();
        let addr = b.addr;
        async move {
            Connection::login(Login {
                addr,
                server_name: "localhost",
                ca_pem: &ca,
                alpn: ALPN,
                tenant: "dev",
                device_id: id,
                secret: *cred.secret_bytes().unwrap(),
            })
            .await
            .unwrap()
        }
    };

    // A device created and enabled through node A is served by node B.
    let live = connect_to_b("scan-1").await;
    assert!(matches!(job_open(&live).await, Ok(Frame::JobStatus { .. })));
    let t = Instant::now();
    let o = a.quire(&[
        "admin",
        "--credential",
        admin,
        "device",
        "disable",
        "scan-1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Node B closes the connection by itself: nothing is asked of it meanwhile. Its safety
    // poll runs every 10 s, so closing within 5 s means the notification did it.
    let took = closed_within(&live, t, Duration::from_secs(5)).await;
    eprintln!("node B closed scan-1's connection {took:?} after `quire admin device disable` started on node A");
    assert!(took.is_some(), "node B kept serving a disabled device");
    let e = job_open(&live).await.unwrap_err().to_string();
    assert!(e.contains("scan-1 was disabled by an administrator"), "{e}");

    // The listening connections are cut (as a database restart or a network blip would);
    // a revoke made before they are back still reaches node B.
    let live = connect_to_b("scan-2").await;
    let cut = psql(
        &url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query = 'LISTEN quire_devices'",
    );
    assert_eq!(
        cut, "2",
        "one connection per node listening for device changes"
    );
    let t = Instant::now();
    let o = a.quire(&["admin", "--credential", admin, "device", "revoke", "scan-2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let took = closed_within(&live, t, Duration::from_secs(8)).await;
    eprintln!("without a listener, node B closed scan-2's connection {took:?} after the revoke");
    assert!(took.is_some(), "the revoke was lost");
    let e = job_open(&live).await.unwrap_err().to_string();
    assert!(e.contains("scan-2 was revoked by an administrator"), "{e}");
}

/// A second node sharing node A's database, object store, master key and certificate (the
/// shape of a deployment behind one name), without development credentials of its own.
pub(crate) fn second_node(a: &TestServer, url: &str, extra: &str) -> TestServer {
    let data = a.path().join("quire-data");
    TestServer::start_with_config(&format!(
        "{}{extra}[dev]\nbootstrap = false\n\
         [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [vault]\nmaster_key = \"{master}\"\nallow_master_key_in_data_dir = true\n\
         [store]\nkind = \"local\"\npath = \"{store}\"\n",
        meta_toml(url),
        cert = data.join("tls/dev-cert.pem").display(),
        key = data.join("tls/dev-key.pem").display(),
        master = data.join("vault/master.key").display(),
        store = data.join("store").display(),
    ))
}

/// A push cut off on node A resumes on node B: the same job, its pages stored once, sealed
/// under one tenant key both nodes share; it reads back byte-identical through either node.
#[test]
fn a_job_begun_on_one_node_is_resumed_and_committed_on_the_other() {
    use std::io::BufRead;
    let url = fresh_database();
    let a = TestServer::start_with_config(&meta_toml(&url));
    let b = second_node(&a, &url, "");
    let job = a.path().join("long-job");
    std::fs::create_dir(&job).unwrap();
    for i in 0..60 {
        write_random_file(&job.join(format!("p{i:03}.tif")), 200_000, i);
    }
    let push = |server: &TestServer| {
        std::process::Command::new(BIN)
            .args(["push", job.to_str().unwrap(), "--concurrency", "1"])
            .args(["--no-progress", "--server", &server.addr.to_string()])
            .current_dir(a.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = push(&a);
    let mut lines = std::io::BufReader::new(first.stderr.take().unwrap()).lines();
    for _ in 0..5 {
        let l = lines.next().unwrap().unwrap();
        assert!(l.starts_with("stored page"), "{l}");
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let on_a: u32 = psql(&url, "SELECT count(*) FROM pages").parse().unwrap();
    assert!(
        (5..60).contains(&on_a),
        "{on_a} pages stored before the cut"
    );

    let second = push(&b).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    let job_id = last_line(&second.stdout);
    let resent = err.lines().filter(|l| l.starts_with("stored page")).count() as u32;
    assert_eq!(
        resent,
        60 - on_a,
        "pages stored on A were sent again:\n{err}"
    );
    assert_eq!(
        psql(
            &url,
            &format!("SELECT committed, page_count, (SELECT count(*) FROM pages) FROM jobs WHERE job = '{job_id}'")
        ),
        "t|60|60"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*), max(version) FROM key_rings WHERE tenant = 'dev'"
        ),
        "1|1",
        "one tenant key, shared"
    );
    for (node, server) in [("a", &a), ("b", &b)] {
        let out = a.path().join(format!("out-{node}"));
        let o = a.quire(&[
            "get",
            "--job",
            &job_id,
            "--out",
            out.to_str().unwrap(),
            "--server",
            &server.addr.to_string(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        same_files(&job, &out);
    }
}

/// Pages a node acknowledged, from its /metrics.
pub(crate) fn pages_acknowledged(metrics: std::net::SocketAddr) -> u64 {
    let (status, body) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| l.starts_with("quire_pages_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A push naming both nodes (`--server A,B`) goes on through the other when the node it is
/// pushing to is killed (SIGKILL) mid-job: every page is stored once and reads back
/// byte-identical.
#[test]
fn a_push_naming_two_nodes_fails_over_when_its_node_is_killed() {
    push_fails_over_when_its_node("KILL");
}

/// The same when the node is stopped (SIGTERM): it drains, refusing new pages and then new
/// connections, and the push finishes on the other node.
#[test]
fn a_push_naming_two_nodes_fails_over_when_its_node_drains() {
    push_fails_over_when_its_node("TERM");
}

/// A push naming both nodes; once pages flow, `signal` goes to the node it is on.
fn push_fails_over_when_its_node(signal: &str) {
    use std::io::BufRead;
    let url = fresh_database();
    let (ma, mb) = (free_port(), free_port());
    let metrics = |port: u16| format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let mut a = TestServer::start_with_config(&format!("{}{}", meta_toml(&url), metrics(ma)));
    let mut b = second_node(&a, &url, &metrics(mb));
    let job = a.path().join("long-job");
    std::fs::create_dir(&job).unwrap();
    for i in 0..60 {
        write_random_file(&job.join(format!("p{i:03}.tif")), 200_000, 100 + i);
    }
    let servers = format!("{},{}", a.addr, b.addr);
    let mut push = std::process::Command::new(BIN)
        .args([
            "push",
            job.to_str().unwrap(),
            "--concurrency",
            "1",
            "--no-progress",
        ])
        .args(["--server", &servers])
        .current_dir(a.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(push.stderr.take().unwrap()).lines();
    for _ in 0..5 {
        let l = lines.next().unwrap().unwrap();
        assert!(l.starts_with("stored page"), "{l}");
    }
    let metrics_of = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let (on_a, on_b) = (
        pages_acknowledged(metrics_of(ma)),
        pages_acknowledged(metrics_of(mb)),
    );
    assert!(
        on_a == 0 || on_b == 0,
        "one connection, one node: {on_a} and {on_b}"
    );
    let (killed, survivor) = match on_a > 0 {
        true => (&mut a, metrics_of(mb)),
        false => (&mut b, metrics_of(ma)),
    };
    if signal == "KILL" {
        killed.kill();
    } else {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &killed.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let out = push.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", rest.join("\n"));
    let job_id = last_line(&out.stdout);
    assert!(
        pages_acknowledged(survivor) > 0,
        "the other node took no page"
    );
    assert_eq!(
        psql(
            &url,
            &format!("SELECT committed, page_count, (SELECT count(*) FROM pages) FROM jobs WHERE job = '{job_id}'")
        ),
        "t|60|60"
    );
    let (reader, restored) = match on_a > 0 {
        true => (&b, a.path().join("restored")),
        false => (&a, a.path().join("restored")),
    };
    let o = a.quire(&[
        "get",
        "--job",
        &job_id,
        "--out",
        restored.to_str().unwrap(),
        "--server",
        &reader.addr.to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    same_files(&job, &restored);
}

/// The retention sweeper runs on one node at a time, and when that node dies (SIGKILL) the
/// other takes it over.
#[test]
fn the_sweeper_runs_on_one_node_and_moves_when_it_dies() {
    const LEADS: &str = "this node runs the retention sweeper";
    let url = fresh_database();
    let sweep = "[retention]\nsweep_interval_secs = 0.2\n";
    let mut a = TestServer::start_with_config(&format!("{}{sweep}", meta_toml(&url)));
    let mut b = second_node(&a, &url, sweep);
    let wait_for = |what: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !what() && t.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(50));
        }
        what()
    };
    assert!(wait_for(
        &|| a.log_text().contains(LEADS) || b.log_text().contains(LEADS)
    ));
    // Many sweeps later, still one.
    std::thread::sleep(Duration::from_secs(1));
    let (on_a, on_b) = (a.log_text().contains(LEADS), b.log_text().contains(LEADS));
    assert!(on_a != on_b, "sweeper on a: {on_a}, on b: {on_b}");
    let survivor = match on_a {
        true => {
            a.kill();
            &b
        }
        false => {
            b.kill();
            &a
        }
    };
    let t = Instant::now();
    assert!(
        wait_for(&|| survivor.log_text().contains(LEADS)),
        "the sweeper did not move to the node left"
    );
    eprintln!(
        "the other node took the sweeper over {:?} after the kill",
        t.elapsed()
    );
}

/// A tenant's byte rate holds across nodes: two pushes of one tenant through two nodes at
/// once share the rate (each node's share follows the demand it sees), where two nodes each
/// limiting on their own would let twice the rate through.
#[test]
fn a_tenants_rate_is_shared_by_the_nodes() {
    let url = fresh_database();
    let limit = "[limits]\ntenant_bytes_per_sec = 1000000\n";
    let a = TestServer::start_with_config(&format!("{}{limit}", meta_toml(&url)));
    let b = second_node(&a, &url, limit);
    let push = |server: &TestServer, name: &str| {
        let job = a.path().join(name);
        std::fs::create_dir(&job).unwrap();
        for i in 0..6 {
            write_random_file(&job.join(format!("p{i}.tif")), 1_000_000, i);
        }
        std::process::Command::new(BIN)
            .args(["push", job.to_str().unwrap(), "--no-progress"])
            .args(["--server", &server.addr.to_string()])
            .current_dir(a.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let t = Instant::now();
    let pushes = [push(&a, "job-a"), push(&b, "job-b")];
    for p in pushes {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let took = t.elapsed();
    // A lower bound only, which no machine noise can break. 12 MB at 1 MB/s: each node's
    // one-second burst (2 MB), then at most one exchange interval with both nodes at the full
    // rate (2 MB more), then 1 MB/s for the other 8 MB: about 9 s. Nodes limiting alone
    // would take about 5 s (6 MB each at 1 MB/s, less a 1 MB burst).
    eprintln!("two pushes of 6 MB through two nodes at a shared 1 MB/s took {took:?}");
    assert!(
        took >= Duration::from_secs(7),
        "12 MB went through in {took:?}"
    );
}

/// A key rotation made through one node reaches the other's cache within about a second
/// (by notification), not after the cache's five minutes: the other node's next page is
/// sealed under the new version.
#[test]
fn a_key_rotated_on_one_node_is_used_by_the_other_at_once() {
    let url = fresh_database();
    let a = TestServer::start_with_config(&meta_toml(&url));
    let b = second_node(&a, &url, "");
    let samples = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let push_on_b = |job: &str| {
        let b_addr = b.addr.to_string();
        a.push_ok(
            &samples,
            &["--no-progress", "--job", job, "--server", &b_addr],
        )
    };
    let versions = |job: &str| -> Vec<u32> {
        walk(&a.store_dir().join(format!("tenants/dev/jobs/{job}/pages")))
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).unwrap();
                quire_codecs::sealed::Header::parse(&bytes)
                    .unwrap()
                    .unwrap()
                    .kek
                    .version
            })
            .collect()
    };
    push_on_b("before");
    assert_eq!(
        versions("before"),
        [1; 5],
        "node B holds version 1 in its cache"
    );
    let admin = a.admin_cred_path();
    let o = a.quire(&[
        "admin",
        "--credential",
        admin.to_str().unwrap(),
        "key",
        "rotate",
        "--tenant",
        "dev",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(Duration::from_millis(1500));
    push_on_b("after");
    assert_eq!(
        versions("after"),
        [2; 5],
        "node B sealed under the new version\n{}",
        b.log_text()
    );
}
