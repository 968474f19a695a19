//! Mailroom batches: a job of thousands of pages with the longest names a page may have is
//! committed, read back whole and page by page, resumed, and delivered. Its manifest and job
//! status are far beyond one 64 KiB control frame.

use crate::common::*;

/// `n` pages named with 255 bytes of non-ASCII UTF-8 each, a few bytes of content apiece.
fn make_job(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let name = format!("{i:04}-{}", "é".repeat(125));
        assert_eq!(name.len(), 255);
        std::fs::write(dir.join(&name), format!("page {i}\n").repeat(i % 7 + 1)).unwrap();
    }
}

#[test]
fn a_3000_page_job_with_255_byte_names_reads_back_resumes_and_delivers() {
    let server = TestServer::in_process();
    let job = server.path().join("batch");
    make_job(&job, 3000);
    let id = server.push_ok(&job, &["--no-progress", "--concurrency", "32"]);

    let out = server.path().join("out");
    server.get_ok(&id, &out);
    assert_eq!(walk(&out).len(), 3000);
    same_files(&job, &out);

    let one = server.path().join("one");
    let o = server.get_page(&id, 2999, &one);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(walk(&one).len(), 1);

    // Pushing under the same job id asks for the job's status (3000 entries): every page is
    // already stored, nothing is sent again, and the commit is the same.
    let o = server.quire(&["push", job.to_str().unwrap(), "--job", &id, "--no-progress"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("3000 already stored")
            || String::from_utf8_lossy(&o.stdout).contains("3000 already stored"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let delivered = server.path().join("delivered");
    let (ok, stdout, stderr) = run(
        server.path(),
        &[
            "deliver",
            "--tenant",
            "dev",
            "--out",
            delivered.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
    assert_eq!(walk(&delivered.join(&id)).len(), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_3000_page_push_resumes() {
    let server = TestServer::in_process();
    let job = server.path().join("batch");
    make_job(&job, 3000);
    // The first run stops after 2000 pages: sent through the client library, no commit,
    // its upload noted in the push journal as `quire push` notes it.
    let pages = quire_client::push::scan_dir(&job).unwrap();
    let conn = server.connect().await;
    let id = "job-interrupted";
    let upload = quire_client::push::Upload::new(id);
    quire_client::journal::Journal::open(
        &server.path().join(".quire-push"),
        &job,
        &conn.tenant,
        &conn.device_id,
    )
    .unwrap()
    .begin(id, upload.id)
    .unwrap();
    let bar = indicatif::ProgressBar::hidden();
    for p in &pages[..2000] {
        quire_client::push::send_page(&conn, &upload, p, &bar)
            .await
            .unwrap();
    }
    conn.close().await;
    let second = server.quire(&["push", job.to_str().unwrap(), "--job", id, "--no-progress"]);
    let text = String::from_utf8_lossy(&second.stderr).into_owned()
        + &String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{text}");
    assert!(text.contains("2000 already stored"), "{text}");
    let out = server.path().join("out");
    server.get_ok(id, &out);
    assert_eq!(walk(&out).len(), 3000);
}
