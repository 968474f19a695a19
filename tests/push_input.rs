//! What `quire push` takes from a directory, and what running it again does: committed
//! directories are never stored twice; links, hidden and special files are not pages.

use crate::common::*;

fn manifests(server: &TestServer) -> usize {
    server
        .stored_files()
        .iter()
        .filter(|p| p.ends_with("manifest"))
        .count()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn running_the_same_command_again_stores_nothing_twice() {
    let server = TestServer::in_process();
    let a = server.path().join("a");
    let b = server.path().join("b");
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("p1.jpg"), d.to_string_lossy().as_bytes()).unwrap();
    }
    // A name no page may have makes directory b fail; a is committed.
    std::fs::write(b.join("bad\\name.jpg"), b"x").unwrap();
    let push = |extra: &[&str]| {
        let mut args = vec![
            "push",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        server.quire(&args)
    };
    let first = push(&[]);
    assert!(!first.status.success());
    let job_a = last_line(&first.stdout);
    assert!(job_a.starts_with("job-"), "{}", text(&first));
    assert_eq!(manifests(&server), 1);

    let second = push(&[]);
    assert!(!second.status.success());
    assert_eq!(last_line(&second.stdout), job_a, "{}", text(&second));
    assert!(
        text(&second).contains("already committed"),
        "{}",
        text(&second)
    );
    assert_eq!(manifests(&server), 1, "a was stored a second time");

    std::fs::rename(b.join("bad\\name.jpg"), b.join("p2.jpg")).unwrap();
    let third = push(&[]);
    assert!(third.status.success(), "{}", text(&third));
    let ids: Vec<String> = String::from_utf8_lossy(&third.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], job_a);
    assert_eq!(manifests(&server), 2);

    // Changed pages are a new job; --again pushes the same pages as a new job on purpose.
    std::fs::write(a.join("p3.jpg"), b"added later").unwrap();
    let changed = server.push_ok(&a, &["--no-progress"]);
    assert_ne!(changed, job_a);
    let again = server.push_ok(&a, &["--no-progress", "--again"]);
    assert_ne!(again, changed);
    assert_eq!(manifests(&server), 4);
}

#[test]
fn links_hidden_and_special_files_are_skipped_with_a_warning() {
    let server = TestServer::in_process();
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("page.jpg"), b"the page").unwrap();
    let secret = server.path().join("secret.txt");
    std::fs::write(&secret, b"not a scan").unwrap();
    std::os::unix::fs::symlink(&secret, job.join("link.jpg")).unwrap();
    std::os::unix::fs::symlink(server.path().join("gone"), job.join("dangling.jpg")).unwrap();
    std::fs::write(job.join(".DS_Store"), b"finder junk").unwrap();
    std::fs::create_dir(job.join("sub")).unwrap();
    std::fs::write(job.join("sub/inner.jpg"), b"inner").unwrap();
    let fifo = job.join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());

    let o = server.quire(&["push", job.to_str().unwrap(), "--no-progress"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for (name, why) in [
        ("link.jpg", "symbolic link"),
        ("dangling.jpg", "symbolic link"),
        (".DS_Store", "hidden"),
        ("sub", "subdirectory"),
        ("pipe", "not a regular file"),
    ] {
        assert!(
            t.lines()
                .any(|l| l.contains("warning: skipped") && l.contains(name) && l.contains(why)),
            "no warning for {name}: {t}"
        );
    }
    let id = last_line(&o.stdout);
    let out = server.path().join("out");
    server.get_ok(&id, &out);
    let got: Vec<_> = walk(&out)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, vec!["page.jpg".to_string()]);

    // Asked for, a link's target is sent (the dangling link is still skipped).
    let o = server.quire(&[
        "push",
        job.to_str().unwrap(),
        "--no-progress",
        "--follow-symlinks",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let id = last_line(&o.stdout);
    let out = server.path().join("out2");
    server.get_ok(&id, &out);
    assert_eq!(std::fs::read(out.join("link.jpg")).unwrap(), b"not a scan");
    assert_eq!(walk(&out).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_held_in_memory_are_pushed_resumed_and_read_back() {
    use quire_client::push::{push_pages, send_page, LocalPage, Upload};
    use sha2::{Digest, Sha256};
    let server = TestServer::in_process();
    let conn = server.connect().await;
    let pages: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("Seite {i}.tif"),
                format!("page {i} ").repeat(1000 * i + 1).into_bytes(),
            )
        })
        .collect();
    let upload = Upload::new("in-memory");
    // A first attempt stored two pages and stopped (its process ended before the commit).
    let bar = indicatif::ProgressBar::hidden();
    for (i, (name, bytes)) in pages[..2].iter().enumerate() {
        let page = LocalPage {
            path: name.into(),
            entry: quire_codecs::wire::PageEntry {
                index: i as u32,
                name: name.clone(),
                size: bytes.len() as u64,
                sha256: Sha256::digest(bytes).into(),
            },
            hashed: true,
            bytes: Some(bytes.clone().into()),
        };
        send_page(&conn, &upload, &page, &bar).await.unwrap();
    }
    // Called again with the same upload and every page: the two stored ones are skipped.
    let all: Vec<_> = pages
        .iter()
        .map(|(n, b)| (n.clone(), b.as_slice()))
        .collect();
    let report = push_pages(&conn, &upload, all, 4).await.unwrap();
    assert_eq!((report.pages, report.skipped), (5, 2));
    let out = server.path().join("out");
    let fetched = quire_client::get::get_job(&conn, "in-memory", None, &out)
        .await
        .unwrap();
    assert_eq!(fetched.len(), 5);
    for ((name, bytes), f) in pages.iter().zip(&fetched) {
        assert_eq!(&f.entry.name, name);
        assert_eq!(&std::fs::read(&f.path).unwrap(), bytes);
    }
    conn.close().await;
}

/// A page file is read once, hashed while it is sent: one that grows or shrinks after it
/// was listed is refused by the scanner itself, naming the file, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_file_that_changes_while_it_is_sent_is_not_stored() {
    use quire_client::push::{scan_dir, send_page, Upload};
    let server = TestServer::in_process();
    let conn = server.connect().await;
    let job = server.path().join("changing");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("a.tif"), vec![1u8; 3_000_000]).unwrap();
    std::fs::write(job.join("b.tif"), vec![2u8; 3_000_000]).unwrap();
    let pages = scan_dir(&job).unwrap();
    assert!(pages.iter().all(|p| !p.hashed), "listing reads no page");
    let mut grown = std::fs::OpenOptions::new()
        .append(true)
        .open(job.join("a.tif"))
        .unwrap();
    std::io::Write::write_all(&mut grown, b"more").unwrap();
    std::fs::File::options()
        .write(true)
        .open(job.join("b.tif"))
        .unwrap()
        .set_len(1_000)
        .unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let upload = Upload::new("changing");
    for (page, how) in pages.iter().zip(["grew", "shrank"]) {
        let e = send_page(&conn, &upload, page, &bar).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("the file {how} while it was being sent")),
            "{text}"
        );
        assert!(text.contains(page.path.to_str().unwrap()), "{text}");
    }
    conn.close().await;
    assert!(
        server.stored_files().is_empty(),
        "{:?}",
        server.stored_files()
    );

    // Pushed as it is now, the folder is stored as it is now.
    server.push_ok(&job, &["--no-progress"]);
    assert_eq!(server.stored_files().len(), 3, "two pages and the manifest");
}

/// `quire push` reads each page file once (its SHA-256 is computed while it is sent): the
/// bytes this process read while pushing a folder (client and in-process server together,
/// from `/proc/self/io`) stay well under twice the folder's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_page_file_is_read_once() {
    use quire_client::push::{push_dir, PushOptions};
    fn bytes_read() -> u64 {
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .parse()
            .unwrap()
    }
    let server = TestServer::in_process();
    let conn = server.connect().await;
    let job = server.path().join("read-once");
    std::fs::create_dir(&job).unwrap();
    let size = 20_000_000u64;
    for i in 0..4u8 {
        let mut page = vec![0u8; (size / 4) as usize];
        getrandom::fill(&mut page).unwrap();
        page[0] = i;
        std::fs::write(job.join(format!("p{i}.tif")), page).unwrap();
    }
    let options = PushOptions {
        job: None,
        concurrency: 4,
        progress: None,
        state_dir: server.path().join(".quire-push"),
        again: false,
        follow_symlinks: false,
    };
    let before = bytes_read();
    let report = push_dir(&conn, &job, &options).await.unwrap();
    let read = bytes_read() - before;
    assert_eq!((report.pages, report.bytes), (4, size));
    assert!(
        (size..size * 3 / 2).contains(&read),
        "read {read} bytes to push {size}"
    );
    conn.close().await;
}
