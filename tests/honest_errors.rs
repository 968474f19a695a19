//! Errors that say whose fault it is and what to do: an object altered at rest is `Corrupt`
//! (named, not retryable) rather than a retryable `Internal`; a failed `get` leaves no
//! unverified plaintext behind; `deliver` reports a broken job and delivers the others.

use crate::common::*;

/// Flips one byte in the middle of the stored object whose path ends with `suffix`.
fn damage(server: &TestServer, suffix: &str) {
    let victim = server
        .stored_files()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no stored object ending in {suffix}"));
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
}

fn job_dir(server: &TestServer, name: &str, pages: usize) -> std::path::PathBuf {
    let dir = server.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..pages {
        write_random_file(&dir.join(format!("p{i}.tif")), 300_000, i as u64 + 1);
    }
    dir
}

#[test]
fn a_page_altered_at_rest_is_corrupt_named_and_leaves_nothing_behind() {
    let server = TestServer::start();
    let dir = job_dir(&server, "scan", 3);
    let id = server.push_ok(&dir, &["--no-progress"]);
    damage(&server, &format!("{id}/pages/000001"));

    let out = server.path().join("out");
    let o = server.quire(&["get", "--job", &id, "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Corrupt"), "{err}");
    assert!(err.contains(&format!("job {id}, page 1")), "{err}");
    assert!(err.contains("restore it from a backup"), "{err}");
    assert!(!err.contains("Internal"), "{err}");
    assert!(!err.contains("quire-data"), "no server path: {err}");
    // Page 0 was verified and kept; nothing of page 1 stays, not even a partial file.
    let left: Vec<String> = walk(&out)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["p0.tif".to_string()], "{left:?}");
    assert!(server.log_text().contains("failed authentication"));
}

#[test]
fn deliver_reports_a_broken_job_and_delivers_the_others() {
    let server = TestServer::start();
    let broken = server.push_ok(&job_dir(&server, "a", 2), &["--no-progress"]);
    let fine = server.push_ok(&job_dir(&server, "b", 2), &["--no-progress"]);
    damage(&server, &format!("{broken}/manifest"));
    let out = server.path().join("delivered");
    let (ok, stdout, stderr) = run(
        server.path(),
        &["deliver", "--tenant", "dev", "--out", out.to_str().unwrap()],
    );
    assert!(!ok, "a broken job makes the run fail: {stderr}");
    assert!(stdout.contains(&fine), "{stdout}");
    assert_eq!(walk(&out.join(&fine)).len(), 2);
    assert!(
        stderr.contains(&format!("job {broken}: NOT delivered")),
        "{stderr}"
    );
    assert!(stderr.contains("Corrupt"), "{stderr}");
    assert!(!out.join(&broken).exists());
    assert!(!out.join(format!(".{broken}.partial")).exists());
    // The next run tries the broken job again and still delivers nothing twice.
    let (ok, stdout, _) = run(
        server.path(),
        &["deliver", "--tenant", "dev", "--out", out.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(!stdout.contains(&fine));
}

#[test]
fn nothing_happens_that_the_audit_log_cannot_hold() {
    let mut server = TestServer::start();
    let id = server.push_ok(&job_dir(&server, "scan", 1), &["--no-progress"]);
    server.kill();
    // The disk under the audit log is full.
    let audit = server.path().join("quire-data/audit.log");
    let kept = std::fs::read(&audit).unwrap_or_default();
    std::fs::remove_file(&audit).ok();
    std::os::unix::fs::symlink("/dev/full", &audit).unwrap();
    server.restart();
    let o = admin(&server, &["tenant", "create", "acme"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("audit log") && err.contains("ServerFull"),
        "{err}"
    );
    let out = server.path().join("out");
    let o = server.quire(&["get", "--job", &id, "--out", out.to_str().unwrap()]);
    assert!(!o.status.success(), "a read the audit log cannot hold");
    // Pages may still come in, but no job is committed off the record.
    let o = server.quire(&[
        "push",
        job_dir(&server, "later", 1).to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(!o.status.success(), "a commit the audit log cannot hold");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("audit log"), "{err}");
    assert!(!out.join("p0.tif").exists());
    assert!(server.log_text().contains("cannot write the audit log"));

    // Space again: the tenant was never created, so creating it now succeeds.
    server.kill();
    std::fs::remove_file(&audit).unwrap();
    std::fs::write(&audit, kept).unwrap();
    server.restart();
    let o = admin(&server, &["tenant", "create", "acme"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn admin(server: &TestServer, args: &[&str]) -> std::process::Output {
    let cred = server.admin_cred_path();
    let mut full = vec!["admin", "--credential", cred.to_str().unwrap()];
    full.extend_from_slice(args);
    server.quire(&full)
}

/// Unmounts (lazily, so a busy mount goes too) when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_the_servers_fault_said_without_its_paths() {
    if !nix_is_root() {
        eprintln!("skipped: mounting a small file system needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("quire-data/spool");
    std::fs::create_dir_all(&spool).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&spool)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a 1 MiB tmpfs failed");
    let _mount = Mount(spool.clone());
    let server = TestServer::start_in(dir);
    // A page too large to wait in memory goes through a spool file, which cannot be written.
    let job = server.path().join("big");
    std::fs::create_dir(&job).unwrap();
    write_random_file(&job.join("big.tif"), 40_000_000, 5);
    let page = &quire_client::push::scan_dir(&job).unwrap()[0];
    let conn = server.connect().await;
    let upload = quire_client::push::Upload::new("full");
    let e = quire_client::push::send_page(&conn, &upload, page, &indicatif::ProgressBar::hidden())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert_eq!(
        e.code(),
        Some(quire_codecs::wire::ErrorCode::ServerFull),
        "{text}"
    );
    assert!(text.contains("not your fault"), "{text}");
    assert!(
        !text.contains("quire-data") && !text.contains("spool"),
        "a server path: {text}"
    );
    assert!(quire_codecs::wire::ErrorCode::ServerFull.is_retryable());
    conn.close().await;
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("out of disk space")),
        "{log}"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
