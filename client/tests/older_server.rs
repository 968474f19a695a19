//! A scanner updated before its server: against a server older than `PagePutDigestAfter`
//! (2026-12), `push_dir` hashes pages first and sends `PagePut`, as that server expects.
//!
//! No build of an older server is at hand, so the peer here answers as one did: its frame
//! decoder refused a frame type it did not know with `Error{Malformed}`; every other request
//! of a push it serves from memory, checking each page's bytes against the declared SHA-256.

use std::sync::{Arc, Mutex};

use quire_client::push::{push_dir, PushOptions};
use quire_client::{Connection, Login};
use quire_codecs::wire::{ErrorCode, Frame, Role, ALPN};
use quire_net::stream::{write_frame, FrameReader};
use sha2::{Digest, Sha256};

/// What the older server saw: the first frame of each request, by name.
type Seen = Arc<Mutex<Vec<&'static str>>>;

async fn serve_as_older_server(endpoint: quinn::Endpoint, seen: Seen) {
    let conn = endpoint.accept().await.unwrap().await.unwrap();
    while let Ok((mut send, recv)) = conn.accept_bi().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut reader = FrameReader::new(recv);
            let answer = match reader.next().await.unwrap().unwrap() {
                Frame::Hello { tenant, .. } => Frame::Welcome {
                    tenant,
                    role: Role::Device,
                },
                Frame::PagePutDigestAfter { .. } => {
                    seen.lock().unwrap().push("PagePutDigestAfter");
                    Frame::Error {
                        code: ErrorCode::Malformed,
                        message: "unknown frame type 0x1c".into(),
                    }
                }
                Frame::JobOpen { .. } => Frame::JobStatus {
                    committed: false,
                    pages: vec![],
                },
                Frame::PagePut { page, .. } => {
                    seen.lock().unwrap().push("PagePut");
                    let mut h = Sha256::new();
                    while let Some(Frame::Data(b)) = reader.next().await.unwrap() {
                        h.update(&b);
                    }
                    assert_eq!(<[u8; 32]>::from(h.finalize()), page.sha256);
                    Frame::PageStored {
                        index: page.index,
                        sha256: page.sha256,
                    }
                }
                Frame::JobCommit { page_count, .. } => Frame::JobCommitted {
                    pages: page_count,
                    bytes: 0,
                },
                other => panic!("not part of a push: {other:?}"),
            };
            write_frame(&mut send, &answer).await.unwrap();
            let _ = send.finish();
            let _ = send.stopped().await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_a_server_older_than_digest_after_hashes_pages_first() {
    let dir = tempfile::tempdir().unwrap();
    let id = quire_server::identity::Identity::dev(&dir.path().join("tls")).unwrap();
    let certs = Arc::new(quire_server::identity::CertResolver::new(&id).unwrap());
    let config = quire_server::identity::server_config(certs).unwrap();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let seen: Seen = Arc::default();
    tokio::spawn(serve_as_older_server(endpoint, seen.clone()));

    let job = dir.path().join("job");
    std::fs::create_dir(&job).unwrap();
    for i in 0..3u8 {
        std::fs::write(job.join(format!("p{i}.tif")), vec![i; 200_000]).unwrap();
    }
    let conn = Connection::login(Login {
        addr,
        server_name: "localhost",
        ca_pem: id.trust_anchor_pem(),
        alpn: ALPN,
        tenant: "dev",
        device_id: "scanner",
        secret: [1; 32],
    })
    .await
    .unwrap();
    let options = PushOptions {
        job: Some("older".into()),
        concurrency: 1,
        progress: None,
        state_dir: dir.path().join("state"),
        again: false,
        follow_symlinks: false,
    };
    let report = push_dir(&conn, &job, &options).await.unwrap();
    assert_eq!(report.pages, 3);
    // One refused attempt, then every page the way the older server knows.
    assert_eq!(
        *seen.lock().unwrap(),
        ["PagePutDigestAfter", "PagePut", "PagePut", "PagePut"]
    );
}
