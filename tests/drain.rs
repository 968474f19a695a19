//! SIGTERM drains the server: new pages are refused, pages in flight finish, every page
//! acknowledged before the exit is in the store, the server exits 0, and after a restart the
//! scanner resumes the same upload and the job is complete and byte-identical.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use quire_client::push::{push_pages, send_page, LocalPage, Upload};
use quire_codecs::wire::PageEntry;
use sha2::Digest;

const PAGES: u32 = 400;

fn page_bytes(i: u32) -> Vec<u8> {
    (0..64 * 1024u32)
        .map(|b| (b.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8)
        .collect()
}

fn local_page(i: u32) -> LocalPage {
    let bytes = page_bytes(i);
    LocalPage {
        path: format!("page-{i:04}.tif").into(),
        entry: PageEntry {
            index: i,
            name: format!("page-{i:04}.tif"),
            size: bytes.len() as u64,
            sha256: sha2::Sha256::digest(&bytes).into(),
        },
        hashed: true,
        bytes: Some(bytes.into()),
    }
}

#[test]
fn sigterm_finishes_what_runs_loses_nothing_acknowledged_and_the_scanner_resumes() {
    let mut server = TestServer::start_with_config("drain_timeout_secs = 20\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upload = Upload::new("drain-job");
    let acked: Arc<Mutex<Vec<u32>>> = Arc::default();

    // A scanner pushing 400 pages, four at a time, noting each acknowledgement.
    let pushing = {
        let (cred, addr) = (server.device_cred(), server.addr);
        let (upload, acked) = (upload.clone(), acked.clone());
        rt.spawn(async move {
            let conn = quire_client::Connection::connect(&cred, Some(addr)).await?;
            let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let lanes = (0..4).map(|_| {
                let (conn, upload, acked, next) = (&conn, &upload, acked.clone(), next.clone());
                async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= PAGES {
                            return Ok::<(), quire_client::ClientError>(());
                        }
                        let page = local_page(i);
                        send_page(conn, upload, &page, &indicatif::ProgressBar::hidden()).await?;
                        acked.lock().unwrap().push(i);
                    }
                }
            });
            let outcome = futures::future::try_join_all(lanes).await.map(|_| ());
            conn.close().await;
            outcome
        })
    };

    // Terminate once some pages are acknowledged and more are in flight.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no acknowledgements"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal("-TERM");
    let status = server
        .wait_exit(Duration::from_secs(40))
        .expect("the drain ended");
    assert!(status.success(), "the drain exited with {status}");
    let log = server.log_text();
    assert!(log.contains("draining") && log.contains("drained"), "{log}");
    let _ = rt.block_on(pushing).unwrap();

    // Every acknowledged page is in the store.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20);
    let pages_dir = server
        .path()
        .join("quire-data/store/tenants/dev/jobs/drain-job/pages");
    for i in &acked {
        assert!(
            pages_dir.join(format!("{i:06}")).exists(),
            "page {i} was acknowledged but is not in the store"
        );
    }

    // After a restart the same upload resumes: stored pages are skipped, the rest sent, and
    // the job reads back byte for byte.
    server.restart();
    rt.block_on(async {
        let conn = server.connect().await;
        let pages = (0..PAGES).map(|i| {
            (
                format!("page-{i:04}.tif"),
                std::io::Cursor::new(page_bytes(i)),
            )
        });
        let report = push_pages(&conn, &upload, pages, 4).await.unwrap();
        assert_eq!(report.pages, PAGES);
        assert!(
            report.skipped as usize >= acked.len(),
            "{} skipped",
            report.skipped
        );
        conn.close().await;
    });
    let out = server.path().join("restored");
    let o = server.quire(&["get", "--job", "drain-job", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for i in 0..PAGES {
        let got = std::fs::read(out.join(format!("page-{i:04}.tif"))).unwrap();
        assert!(got == page_bytes(i), "page {i} differs");
    }
}
