//! A job id belongs to the device whose upload it is: a second device racing for the same id
//! is refused at once (never mixed in, never stuck); an administrator can abort an upload
//! that will never be committed, and the sweeper collects one after a time.

mod common;

use common::*;
use quire::client::push::{scan_dir, send_page};
use quire::client::Connection;
use quire::credential::{Credential, CredentialFile};
use quire_codecs::wire::{ErrorCode, Frame};

fn pages(server: &TestServer, name: &str, n: usize) -> std::path::PathBuf {
    let dir = server.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("p{i}.jpg")), format!("{name} page {i}")).unwrap();
    }
    dir
}

async fn connect(server: &TestServer, cred: &std::path::Path) -> Connection {
    Connection::connect(&Credential::load(cred).unwrap(), Some(server.addr))
        .await
        .unwrap()
}

fn page_objects(server: &TestServer, job: &str) -> usize {
    server
        .stored_files()
        .iter()
        .filter(|p| p.to_string_lossy().contains(&format!("/{job}/pages/")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_racing_for_one_job_id_never_mix() {
    let server = TestServer::start();
    let b_cred = server.create_device("dev", "scanner-b", "device", true);
    let a = server.connect().await;
    let b = connect(&server, &b_cred).await;
    let bar = indicatif::ProgressBar::hidden();
    let a_pages = scan_dir(&pages(&server, "a", 3)).unwrap();
    let b_pages = scan_dir(&pages(&server, "b", 3)).unwrap();
    send_page(&a, "race", &a_pages[0], &bar).await.unwrap();

    // B is refused at once, at every step, with the reason.
    let e = send_page(&b, "race", &b_pages[1], &bar).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict), "{e}");
    assert!(e.to_string().contains("another upload"), "{e}");
    let e = b
        .call(&Frame::JobOpen {
            tenant: "dev".into(),
            job_id: "race".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));
    let e = b
        .call(&Frame::JobCommit {
            tenant: "dev".into(),
            job_id: "race".into(),
            page_count: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));

    // A finishes its job; what is stored is A's pages only.
    for p in &a_pages[1..] {
        send_page(&a, "race", p, &bar).await.unwrap();
    }
    match a
        .call(&Frame::JobCommit {
            tenant: "dev".into(),
            job_id: "race".into(),
            page_count: 3,
        })
        .await
        .unwrap()
    {
        Frame::JobCommitted { pages: 3, .. } => {}
        f => panic!("{f:?}"),
    }
    let out = server.path().join("out");
    server.get_ok("race", &out);
    for i in 0..3 {
        assert_eq!(
            std::fs::read(out.join(format!("p{i}.jpg"))).unwrap(),
            format!("a page {i}").as_bytes()
        );
    }
    // B, told the id is taken, pushes under its own id.
    let b_dir = server.path().join("b");
    let o = server.quire(&[
        "push",
        b_dir.to_str().unwrap(),
        "--credential",
        b_cred.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_is_aborted_by_an_admin_and_its_id_freed() {
    let server = TestServer::start();
    let a = server.connect().await;
    let bar = indicatif::ProgressBar::hidden();
    for p in &scan_dir(&pages(&server, "a", 2)).unwrap() {
        send_page(&a, "stuck", p, &bar).await.unwrap();
    }
    a.close().await;
    assert_eq!(page_objects(&server, "stuck"), 2);
    let cred = server.admin_cred_path();
    let admin = |args: &[&str]| {
        let mut full = vec!["admin", "--credential", cred.to_str().unwrap()];
        full.extend_from_slice(args);
        server.quire(&full)
    };
    let o = admin(&["job", "abort", "--tenant", "dev", "--job", "stuck"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(page_objects(&server, "stuck"), 0);
    // Free again: another device may use the id now.
    let b_cred = server.create_device("dev", "scanner-b", "device", true);
    let b_dir = pages(&server, "b", 1);
    let o = server.quire(&[
        "push",
        b_dir.to_str().unwrap(),
        "--job",
        "stuck",
        "--credential",
        b_cred.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A committed job is not an unfinished upload.
    let o = admin(&["job", "abort", "--tenant", "dev", "--job", "stuck"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is committed"));
    assert_eq!(page_objects(&server, "stuck"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_uploads_are_collected_after_their_time() {
    let server = TestServer::start_with_config(
        "[retention]\nsweep_interval_secs = 0.2\nuncommitted_ttl_secs = 1\n",
    );
    let a = server.connect().await;
    let bar = indicatif::ProgressBar::hidden();
    let dir = pages(&server, "a", 2);
    let p = scan_dir(&dir).unwrap();
    send_page(&a, "left-behind", &p[0], &bar).await.unwrap();
    // A committed job of the same age is kept.
    let kept = server.push_ok(&dir, &["--no-progress"]);
    assert_eq!(page_objects(&server, "left-behind"), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while page_objects(&server, "left-behind") > 0 {
        assert!(std::time::Instant::now() < deadline, "never collected");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(page_objects(&server, &kept), 2);
    let audit = std::fs::read_to_string(server.path().join("quire-data/audit.log")).unwrap();
    assert!(audit.contains("job.abort") && audit.contains("left-behind"));
    a.close().await;
}
