//! Per-device limits configured in quire.toml, against the real server.

use crate::common::*;
use bytes::Bytes;
use quire_client::stream::{write_data, write_frame};
use quire_client::{expect_answer, ClientError};
use quire_codecs::wire::{ErrorCode, Frame, PageEntry};

#[test]
fn a_byte_rate_limit_paces_the_scanner() {
    let server = TestServer::start_with_config("[limits]\ndevice_bytes_per_sec = 2000000\n");
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    for i in 0..3 {
        write_random_file(&job.join(format!("p{i}.tif")), 2_000_000, i);
    }
    let t = std::time::Instant::now();
    server.push_ok(&job, &["--no-progress"]);
    let took = t.elapsed();
    // A lower bound only, which no amount of machine noise can break: 6 MB at 2 MB/s with a
    // one-second burst needs at least two seconds.
    assert!(
        took >= std::time::Duration::from_millis(1900),
        "6 MB went through in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_in_progress_per_device_are_capped() {
    let server = TestServer::start_with_config("[limits]\ndevice_concurrent_jobs = 1\n");
    let conn = server.connect().await;
    let entry = |size: u64| PageEntry {
        index: 0,
        name: "p.tif".into(),
        size,
        sha256: [0; 32],
    };
    // Job A has a page in flight (never finished).
    let (mut held, _held_reader) = conn
        .open(&Frame::PagePut {
            tenant: "dev".into(),
            job_id: "job-a".into(),
            page: entry(1_000_000),
            upload: None,
        })
        .await
        .unwrap();
    write_data(&mut held, Bytes::from(vec![0u8; 1000]))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // A page of job B is refused while A is open.
    let (mut send, mut reader) = conn
        .open(&Frame::PagePut {
            tenant: "dev".into(),
            job_id: "job-b".into(),
            page: entry(3),
            upload: None,
        })
        .await
        .unwrap();
    write_data(&mut send, Bytes::from_static(b"abc"))
        .await
        .unwrap();
    write_frame(&mut send, &Frame::PageEnd).await.unwrap();
    let _ = send.finish();
    match expect_answer(&mut reader).await {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::LimitExceeded);
            assert!(
                message.contains("1 jobs in progress, its limit is 1"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let _ = held.reset(0u32.into());
}

#[test]
fn a_bad_limit_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("quire.toml"),
        "[limits]\ndevice_pages_per_sec = -3\n",
    )
    .unwrap();
    let (ok, _, err) = run(dir.path(), &["serve", "--config", "quire.toml"]);
    assert!(!ok);
    assert!(err.contains("limits.device_pages_per_sec"), "{err}");
}
