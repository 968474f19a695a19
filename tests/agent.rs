//! The hot-folder agent against a real server: a file written slowly in pieces is never sent
//! half-written; 2,000 files dropped while the server is down are all delivered once it is
//! back, their originals kept until then; killing the agent mid-job loses and duplicates
//! nothing; temporary and hidden files are left alone, unsendable ones go to `.failed/` with a
//! reason, and with `--after delete` originals go only after the commit.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// A running `quire agent --json`, its events collected as they come.
struct Agent {
    child: Child,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Agent {
    fn start(server: &TestServer, dir: &Path, extra: &[&str]) -> Agent {
        let cred = server.path().join("quire-data/dev/device.cred");
        let mut child = Command::new(BIN)
            .args([
                "agent",
                "--watch",
                dir.to_str().unwrap(),
                "--json",
                "--poll-secs",
                "0.2",
                "--retry-max-secs",
                "1",
                "--credential",
                cred.to_str().unwrap(),
                "--server",
                &server.addr.to_string(),
            ])
            .args(extra)
            .current_dir(server.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Agent { child, events }
    }

    fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    /// Waits until `n` events of `kind` came.
    fn until(&self, kind: &str, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.events(kind);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} {kind} events expected; all so far: {:?}",
                self.events.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Peak resident memory (KiB) and open file descriptors of the agent now.
    fn footprint(&self) -> (u64, usize) {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let peak = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        (peak, fds)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The tenant's jobs as `admin jobs --json` lists them.
fn jobs(server: &TestServer) -> Vec<serde_json::Value> {
    let admin = server.admin_cred_path();
    let o = server.quire(&[
        "admin",
        "--credential",
        admin.to_str().unwrap(),
        "jobs",
        "--tenant",
        "dev",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn drop_dir(server: &TestServer) -> PathBuf {
    let d = server.path().join("drop");
    std::fs::create_dir(&d).unwrap();
    d
}

#[test]
fn a_file_written_slowly_in_pieces_is_never_sent_half_written() {
    let server = TestServer::start();
    let dir = drop_dir(&server);
    let agent = Agent::start(&server, &dir, &["--job-per", "file", "--settle-secs", "1"]);
    agent.until("started", 1, Duration::from_secs(10));
    // Ten pieces, the file closed after each, 300 ms apart: well within the settle time.
    let path = dir.join("slow.pdf");
    let mut whole = Vec::new();
    for i in 0..10u64 {
        let piece: Vec<u8> = (0..20_000u64).map(|b| ((b * 7 + i) % 251) as u8).collect();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&piece).unwrap();
        drop(f);
        whole.extend_from_slice(&piece);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            agent.events("staged").is_empty(),
            "taken after {} of 10 pieces",
            i + 1
        );
    }
    let committed = agent.until("committed", 1, Duration::from_secs(30));
    let job_id = committed[0]["job_id"].as_str().unwrap().to_string();
    let out = server.path().join("back");
    server.get_ok(&job_id, &out);
    assert_eq!(std::fs::read(out.join("slow.pdf")).unwrap(), whole);
    assert_eq!(
        std::fs::read(dir.join(".sent/slow.pdf/slow.pdf")).unwrap(),
        whole
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.events("committed").len(), 1);
    assert_eq!(jobs(&server).len(), 1);
}

/// Every file name under `dir` (recursively), without the agent's own journals.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| !p.starts_with(dir.join(".quire/state")) && !p.ends_with("agent.lock"))
        .collect()
}

#[test]
fn two_thousand_files_dropped_while_the_server_is_down_are_all_delivered_after_it_returns() {
    let mut server = TestServer::start();
    let dir = drop_dir(&server);
    server.kill();
    let agent = Agent::start(&server, &dir, &["--settle-secs", "0.5"]);
    for f in 0..20 {
        let folder = dir.join(format!("batch-{f:02}"));
        std::fs::create_dir(&folder).unwrap();
        for p in 0..100 {
            std::fs::write(folder.join(format!("page-{p:03}.tif")), format!("{f}/{p}")).unwrap();
        }
    }
    // While the server is away, everything is taken but nothing is deleted or sent.
    agent.until("staged", 20, Duration::from_secs(60));
    agent.until("retrying", 2, Duration::from_secs(30));
    let held = files_under(&dir);
    assert_eq!(held.len(), 2000, "{held:?}");
    assert!(held.iter().all(|p| p.starts_with(dir.join(".quire/jobs"))));
    // Thousands of waiting files hold no memory or descriptors of their own.
    let (peak_kib, fds) = agent.footprint();
    eprintln!("agent with 2,000 files waiting: peak RSS {peak_kib} KiB, {fds} descriptors open");
    assert!(peak_kib < 64 * 1024, "{peak_kib} KiB");
    assert!(fds < 64, "{fds} descriptors");

    server.restart();
    let committed = agent.until("committed", 20, Duration::from_secs(180));
    let pages: u64 = committed.iter().map(|c| c["pages"].as_u64().unwrap()).sum();
    assert_eq!(pages, 2000);
    let listed = jobs(&server);
    assert_eq!(listed.len(), 20, "{listed:?}");
    assert!(listed
        .iter()
        .all(|j| j["state"] == "committed" && j["pages"] == 100));
    let sent = files_under(&dir);
    assert_eq!(sent.len(), 2000);
    assert!(sent.iter().all(|p| p.starts_with(dir.join(".sent"))));
    assert_eq!(
        std::fs::read_to_string(dir.join(".sent/batch-07/page-042.tif")).unwrap(),
        "7/42"
    );
}

#[test]
fn killing_the_agent_mid_job_loses_and_duplicates_nothing() {
    let server = TestServer::start();
    let dir = drop_dir(&server);
    let originals = server.path().join("originals");
    std::fs::create_dir(&originals).unwrap();
    for p in 0..60 {
        write_random_file(&originals.join(format!("p{p:02}.tif")), 1 << 20, p + 1);
    }
    let args = ["--settle-secs", "0.3", "--concurrency", "1"];
    let mut agent = Agent::start(&server, &dir, &args);
    agent.until("started", 1, Duration::from_secs(10));
    // The folder arrives whole (a rename), as a scanner's finished batch would.
    let incoming = server.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    for f in walk(&originals) {
        std::fs::copy(&f, incoming.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::rename(&incoming, dir.join("big")).unwrap();
    // Killed once some pages are stored and before the job is committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.stored_files().len() < 3 {
        assert!(Instant::now() < deadline, "no page was stored");
        std::thread::sleep(Duration::from_millis(5));
    }
    agent.kill();
    assert!(
        agent.events("committed").is_empty(),
        "the job finished before the kill"
    );
    assert!(
        files_under(&dir).len() == 60,
        "every original is still there"
    );

    let agent = Agent::start(&server, &dir, &args);
    let committed = agent.until("committed", 1, Duration::from_secs(60));
    let listed = jobs(&server);
    assert_eq!(listed.len(), 1, "one job, not two: {listed:?}");
    assert_eq!(listed[0]["pages"], 60);
    let job_id = committed[0]["job_id"].as_str().unwrap();
    assert_eq!(listed[0]["job"], job_id);
    let back = server.path().join("back");
    server.get_ok(job_id, &back);
    same_files(&originals, &back);
    same_files(&originals, &dir.join(".sent/big"));
}

#[test]
fn temporary_files_stay_unsendable_ones_fail_and_originals_go_only_after_commit() {
    let mut server = TestServer::start();
    let dir = drop_dir(&server);
    server.kill();
    let agent = Agent::start(
        &server,
        &dir,
        &[
            "--job-per",
            "file",
            "--settle-secs",
            "0.3",
            "--after",
            "delete",
        ],
    );
    for name in [
        "scan.tif",
        "upload.part",
        "~$lock.docx",
        ".hidden",
        "bad\u{1}name.tif",
    ] {
        std::fs::write(dir.join(name), name).unwrap();
    }
    // A name that is not UTF-8 can never be a page name.
    use std::os::unix::ffi::OsStrExt;
    let latin1 = std::ffi::OsStr::from_bytes(b"Rechnung-M\xfcller.tif");
    std::fs::write(dir.join(latin1), "latin-1 name").unwrap();
    agent.until("staged", 2, Duration::from_secs(30));
    agent.until("retrying", 1, Duration::from_secs(30));
    // Not committed: nothing deleted.
    assert_eq!(
        files_under(&dir.join(".quire/jobs")).len(),
        2,
        "{:?}",
        files_under(&dir)
    );
    server.restart();
    let committed = agent.until("committed", 1, Duration::from_secs(60));
    assert_eq!(committed[0]["job"], "scan.tif");
    assert!(committed[0]["originals"].is_null());
    let failed = agent.until("failed-file", 2, Duration::from_secs(30));
    assert!(
        failed
            .iter()
            .any(|f| f["path"].as_str().unwrap().contains(".failed/bad")),
        "{failed:?}"
    );
    let reason = std::fs::read_to_string(dir.join(".failed/bad\u{1}name.tif.reason.txt")).unwrap();
    assert!(reason.contains("control character"), "{reason}");
    assert!(dir.join(".failed").join(latin1).exists());
    let mut why = dir.join(".failed").join(latin1).into_os_string();
    why.push(".reason.txt");
    let reason = std::fs::read_to_string(why).unwrap();
    assert!(reason.contains("not valid UTF-8"), "{reason}");
    std::thread::sleep(Duration::from_secs(1));
    for left in ["upload.part", "~$lock.docx", ".hidden"] {
        assert!(dir.join(left).exists(), "{left} was taken");
    }
    assert!(!dir.join("scan.tif").exists());
    assert!(!dir.join(".sent").exists());
    assert!(files_under(&dir.join(".quire/jobs")).is_empty());
    assert_eq!(jobs(&server).len(), 1);
}
