//! A job id belongs to the device and the upload that opened it: a second device, or a second
//! push of the same device, racing for the same id is refused at once (never mixed in, never
//! stuck); an administrator can abort an upload that will never be committed, and the sweeper
//! collects one after a time.

use crate::common::*;
use quire_client::credential::{Credential, CredentialFile};
use quire_client::journal::Journal;
use quire_client::push::{scan_dir, send_page, Upload};
use quire_client::Connection;
use quire_codecs::wire::{ErrorCode, Frame, UploadId};

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
    let server = TestServer::in_process();
    let b_cred = server.create_device("dev", "scanner-b", "device", true);
    let a = server.connect().await;
    let b = connect(&server, &b_cred).await;
    let bar = indicatif::ProgressBar::hidden();
    let a_pages = scan_dir(&pages(&server, "a", 3)).unwrap();
    let b_pages = scan_dir(&pages(&server, "b", 3)).unwrap();
    let (a_up, b_up) = (Upload::new("race"), Upload::new("race"));
    send_page(&a, &a_up, &a_pages[0], &bar).await.unwrap();

    // B is refused at once, at every step, with the reason.
    let e = send_page(&b, &b_up, &b_pages[1], &bar).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict), "{e}");
    assert!(e.to_string().contains("another upload"), "{e}");
    let e = b
        .call(&Frame::JobOpen {
            tenant: "dev".into(),
            job_id: "race".into(),
            upload: Some(b_up.id),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));
    let e = b
        .call(&Frame::JobCommit {
            tenant: "dev".into(),
            job_id: "race".into(),
            page_count: 1,
            upload: Some(b_up.id),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));

    // A finishes its job; what is stored is A's pages only.
    for p in &a_pages[1..] {
        send_page(&a, &a_up, p, &bar).await.unwrap();
    }
    match a
        .call(&Frame::JobCommit {
            tenant: "dev".into(),
            job_id: "race".into(),
            page_count: 3,
            upload: Some(a_up.id),
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
    let server = TestServer::in_process();
    let a = server.connect().await;
    let bar = indicatif::ProgressBar::hidden();
    let up = Upload::new("stuck");
    for p in &scan_dir(&pages(&server, "a", 2)).unwrap() {
        send_page(&a, &up, p, &bar).await.unwrap();
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

/// A connection remembers the jobs it opened, so their later pages read nothing before they
/// are stored; the write recording each page still checks the job is this upload's. A job
/// aborted, or committed, while the connection holds it open takes no more pages: the next
/// one is refused with the reason, its object is removed, and the id is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_changed_behind_an_open_connection_takes_no_more_pages() {
    let server = TestServer::in_process();
    let a = server.connect().await;
    let bar = indicatif::ProgressBar::hidden();
    let files = scan_dir(&pages(&server, "a", 4)).unwrap();
    let open = |job: &str, up: &Upload| Frame::JobOpen {
        tenant: "dev".into(),
        job_id: job.into(),
        upload: Some(up.id),
    };
    let up = Upload::new("aborted");
    a.call(&open("aborted", &up)).await.unwrap();
    send_page(&a, &up, &files[0], &bar).await.unwrap();
    send_page(&a, &up, &files[1], &bar).await.unwrap();
    let cred = server.admin_cred_path();
    let o = server.quire(&[
        "admin",
        "--credential",
        cred.to_str().unwrap(),
        "job",
        "abort",
        "--tenant",
        "dev",
        "--job",
        "aborted",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = send_page(&a, &up, &files[2], &bar).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("was aborted"), "{e}");
    assert_eq!(
        page_objects(&server, "aborted"),
        0,
        "nothing left under the job"
    );
    // The id is free: another upload pushes it whole.
    let again = Upload::new("aborted");
    a.call(&open("aborted", &again)).await.unwrap();
    for p in &files {
        send_page(&a, &again, p, &bar).await.unwrap();
    }
    assert_eq!(page_objects(&server, "aborted"), 4);

    // Committed on another connection of the same upload: this one's next page is refused.
    let up = Upload::new("done");
    a.call(&open("done", &up)).await.unwrap();
    send_page(&a, &up, &files[0], &bar).await.unwrap();
    let b = server.connect().await;
    b.call(&Frame::JobCommit {
        tenant: "dev".into(),
        job_id: "done".into(),
        page_count: 1,
        upload: Some(up.id),
    })
    .await
    .unwrap();
    let e = send_page(&a, &up, &files[1], &bar).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict), "{e}");
    assert!(e.to_string().contains("already committed"), "{e}");
    match b.call(&open("done", &up)).await.unwrap() {
        Frame::JobStatus { committed, pages } => {
            assert!(committed);
            assert_eq!(pages.len(), 1, "the committed job keeps its one page");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(page_objects(&server, "done"), 1);
    a.close().await;
    b.close().await;
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
    send_page(&a, &Upload::new("left-behind"), &p[0], &bar)
        .await
        .unwrap();
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

/// Sends `frame` and returns the refusal's code and message.
async fn refused(conn: &Connection, frame: Frame) -> (Option<ErrorCode>, String) {
    let e = conn.call(&frame).await.unwrap_err();
    (e.code(), e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_push_of_the_same_device_cannot_join_an_upload() {
    let server = TestServer::in_process();
    // The same credential, two connections: two `quire push` processes, or two machines.
    let (first, second) = (server.connect().await, server.connect().await);
    let bar = indicatif::ProgressBar::hidden();
    let mine = scan_dir(&pages(&server, "mine", 3)).unwrap();
    let theirs = scan_dir(&pages(&server, "theirs", 3)).unwrap();
    let up = Upload::new("shared");
    send_page(&first, &up, &mine[0], &bar).await.unwrap();

    // Another upload of the same device is refused at every step, and told what to do.
    let other = Upload::new("shared");
    let e = send_page(&second, &other, &theirs[1], &bar)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict), "{e}");
    assert!(
        e.to_string().contains("another upload of this device")
            && e.to_string().contains("quire admin job abort"),
        "{e}"
    );
    let open = |upload| Frame::JobOpen {
        tenant: "dev".into(),
        job_id: "shared".into(),
        upload,
    };
    let commit = |upload| Frame::JobCommit {
        tenant: "dev".into(),
        job_id: "shared".into(),
        page_count: 1,
        upload,
    };
    // A client too old to name its upload cannot join one either.
    for frame in [
        open(Some(other.id)),
        commit(Some(other.id)),
        open(None),
        commit(None),
    ] {
        let (code, text) = refused(&second, frame).await;
        assert_eq!(code, Some(ErrorCode::Conflict), "{text}");
    }
    assert_eq!(page_objects(&server, "shared"), 1);

    // The real CLI, pushing another directory under the same id, stops with the reason and
    // stores nothing.
    let theirs_dir = server.path().join("theirs");
    let o = server.quire(&[
        "push",
        theirs_dir.to_str().unwrap(),
        "--job",
        "shared",
        "--no-progress",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("another upload of this device"), "{stderr}");
    assert_eq!(page_objects(&server, "shared"), 1);

    // The first upload goes on undisturbed, and its job holds its pages only.
    for p in &mine[1..] {
        send_page(&first, &up, p, &bar).await.unwrap();
    }
    let committed = first
        .call(&Frame::JobCommit {
            tenant: "dev".into(),
            job_id: "shared".into(),
            page_count: 3,
            upload: Some(up.id),
        })
        .await
        .unwrap();
    assert!(matches!(committed, Frame::JobCommitted { pages: 3, .. }));
    let out = server.path().join("out");
    server.get_ok("shared", &out);
    same_files(&server.path().join("mine"), &out);
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_push_resumes_as_the_same_upload() {
    let server = TestServer::in_process();
    let dir = pages(&server, "resumed", 3);
    let conn = server.connect().await;
    // What a killed `quire push --job again` left: its journal names the upload, and one
    // page of it is stored.
    let up = Upload::new("again");
    let journal = Journal::open(
        &server.path().join(".quire-push"),
        &dir,
        &conn.tenant,
        &conn.device_id,
    )
    .unwrap();
    journal.begin("again", up.id).unwrap();
    let bar = indicatif::ProgressBar::hidden();
    send_page(&conn, &up, &scan_dir(&dir).unwrap()[0], &bar)
        .await
        .unwrap();
    // While that push runs, a second one of the same directory stops at once.
    let held = journal.lock(&dir).unwrap();
    let o = server.quire(&["push", dir.to_str().unwrap(), "--no-progress"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("another `quire push` of this directory"),
        "{stderr}"
    );
    drop(held);
    // Run again, it resumes the same upload: accepted, one page skipped.
    let o = server.quire(&["push", dir.to_str().unwrap(), "--no-progress"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(last_line(&o.stdout), "again");
    assert!(stderr.contains("1 already stored"), "{stderr}");
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_an_older_client_left_unfinished_is_resumed() {
    let server = TestServer::in_process();
    let dir = pages(&server, "older", 2);
    let conn = server.connect().await;
    // An older client stored a page without naming an upload, and its journal is the
    // one-line form of older versions: the job id alone.
    let mut page = scan_dir(&dir).unwrap().swap_remove(0);
    page.hash().unwrap();
    let (mut send, mut reader) = conn
        .open(&Frame::PagePut {
            tenant: "dev".into(),
            job_id: "from-before".into(),
            page: page.entry.clone(),
            upload: None,
        })
        .await
        .unwrap();
    quire_client::stream::write_data(&mut send, std::fs::read(&page.path).unwrap().into())
        .await
        .unwrap();
    quire_client::stream::write_frame(&mut send, &Frame::PageEnd)
        .await
        .unwrap();
    send.finish().unwrap();
    let stored = quire_client::expect_answer(&mut reader).await.unwrap();
    assert!(matches!(stored, Frame::PageStored { index: 0, .. }));
    let journal = Journal::open(
        &server.path().join(".quire-push"),
        &dir,
        &conn.tenant,
        &conn.device_id,
    )
    .unwrap();
    journal.begin("from-before", UploadId([0; 16])).unwrap();
    let job_file = std::fs::read_dir(server.path().join(".quire-push"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "job"))
        .unwrap();
    std::fs::write(&job_file, "from-before\n").unwrap();

    let o = server.quire(&["push", dir.to_str().unwrap(), "--no-progress"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(last_line(&o.stdout), "from-before");
    assert!(stderr.contains("1 already stored"), "{stderr}");
    let out = server.path().join("out");
    server.get_ok("from-before", &out);
    same_files(&dir, &out);
    conn.close().await;
}
