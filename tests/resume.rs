//! Interrupted pushes: killing the scanner mid-job, or the server, and running the push
//! again stores every page exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;

fn make_job(dir: &std::path::Path, pages: usize, size: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..pages {
        write_random_file(&dir.join(format!("scan-{i:03}.tif")), size, 1000 + i as u64);
    }
}

/// How many times the server logged storing page `index` of `job` for the first time.
fn fresh_stores(log: &str, job: &str, index: usize) -> usize {
    let needle_job = format!("job=\"{job}\"");
    let needle_page = format!(" page={index} ");
    log.lines()
        .filter(|l| {
            l.contains("page stored")
                && l.contains(&needle_job)
                && l.contains(&needle_page)
                && l.contains("again=false")
        })
        .count()
}

fn assert_job_complete(server: &TestServer, job_dir: &std::path::Path, job: &str, pages: usize) {
    let restored = server.path().join(format!("restored-{job}"));
    server.get_ok(job, &restored);
    for f in walk(job_dir) {
        let name = f.file_name().unwrap();
        assert!(
            std::fs::read(&f).unwrap() == std::fs::read(restored.join(name)).unwrap(),
            "{name:?} differs"
        );
    }
    let objects: Vec<_> = server
        .stored_files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&format!("/jobs/{job}/pages/")))
        .collect();
    assert_eq!(objects.len(), pages, "one object per page");
    let log = server.log_text();
    for i in 0..pages {
        assert_eq!(
            fresh_stores(&log, job, i),
            1,
            "page {i} written {} times",
            fresh_stores(&log, job, i)
        );
    }
}

#[test]
fn killing_the_client_mid_job_and_rerunning_stores_each_page_once() {
    let server = TestServer::start();
    let job_dir = server.path().join("batch");
    let pages = 24;
    make_job(&job_dir, pages, 600_000);

    // Start a push without --job: the journal must lead the re-run to the same job.
    let mut child = Command::new(BIN)
        .args([
            "push",
            job_dir.to_str().unwrap(),
            "--concurrency",
            "2",
            "--no-progress",
        ])
        .current_dir(server.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut acked = 0;
    for line in stderr.lines() {
        if line.unwrap().starts_with("stored page") {
            acked += 1;
            if acked == 5 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked, 5, "the push ended before it could be interrupted");

    let out = server.quire(&["push", job_dir.to_str().unwrap(), "--no-progress"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stderr);
    let job = last_line(&out.stdout);
    let skipped: usize = report
        .split("bytes (")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skip count in {report}"));
    assert!(
        skipped >= 5,
        "only {skipped} pages were skipped on resume: {report}"
    );
    assert_job_complete(&server, &job_dir, &job, pages);

    // A finished job's directory pushed again is not stored twice; --again makes a new job.
    let same = server.push_ok(&job_dir, &["--no-progress"]);
    assert_eq!(same, job);
    let again = server.push_ok(&job_dir, &["--no-progress", "--again"]);
    assert_ne!(again, job);
}

#[test]
fn a_server_crash_mid_job_loses_nothing_acknowledged() {
    let mut server = TestServer::start();
    let job_dir = server.path().join("batch");
    let pages = 16;
    make_job(&job_dir, pages, 400_000);
    let mut child = Command::new(BIN)
        .args([
            "push",
            job_dir.to_str().unwrap(),
            "--job",
            "crash-job",
            "--concurrency",
            "1",
            "--no-progress",
        ])
        .current_dir(server.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("stored page ") {
            acked.push(rest.to_string());
            if acked.len() == 4 {
                server.kill();
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the push must fail when the server dies");
    server.restart();
    let job = server.push_ok(&job_dir, &["--job", "crash-job", "--no-progress"]);
    assert_eq!(job, "crash-job");
    assert_job_complete(&server, &job_dir, "crash-job", pages);
}
