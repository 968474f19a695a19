//! A store outage under load: the real S3 server (moto) is stopped while a scanner pushes.
//! Ingest keeps accepting into the spool up to its capacity, then pushes back with a clear
//! busy error; when the store comes back the spool drains, the scanner finishes, and every
//! page is in the store exactly once.

use std::time::{Duration, Instant};

use crate::common::background::BackgroundPush;
use crate::common::moto::Moto;
use crate::common::*;

fn spooled(server: &TestServer) -> usize {
    std::fs::read_dir(server.path().join("quire-data/spool"))
        .map(|rd| {
            rd.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "meta")
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_stopped_store_fills_the_spool_then_pushes_back_then_drains_without_loss() {
    let moto = Moto::start("outage");
    let server = TestServer::start_with_config(&format!(
        "[store]\n{}\
         [spool]\nack = \"spooled\"\ncapacity = 3000000\nbusy_wait_secs = 1\nkey_dir = \"spool-keys\"\n",
        moto.store_toml()
    ));

    // Before the outage: a job goes all the way into S3.
    let before = server.path().join("before");
    std::fs::create_dir_all(&before).unwrap();
    for i in 0..3 {
        write_random_file(&before.join(format!("p{i}.tif")), 200_000, 10 + i);
    }
    let job_before = server.push_ok(&before, &["--no-progress"]);

    // The outage: S3 stops answering (SIGSTOP), and a scanner pushes twice the spool's room.
    moto.signal("-STOP");
    let during = server.path().join("during");
    std::fs::create_dir_all(&during).unwrap();
    for i in 0..12 {
        write_random_file(&during.join(format!("p{i:02}.tif")), 500_000, 100 + i);
    }
    let push = BackgroundPush::start(&server, &during, "during", &["--concurrency", "2"]);
    let busy = push.wait_for_line("retrying", Duration::from_secs(60));
    assert!(busy.contains("spool is full"), "unclear busy error: {busy}");
    let acked_in_outage = push.acknowledged();
    let waiting = spooled(&server);
    assert!(acked_in_outage >= 1, "nothing was accepted into the spool");
    assert!(
        waiting >= acked_in_outage,
        "{waiting} records for {acked_in_outage} acks"
    );
    assert!(waiting < 12, "the spool took more than its capacity");

    // The store comes back: the spool drains and the scanner, which kept retrying, finishes.
    moto.signal("-CONT");
    let pushed = push.finish();
    assert!(pushed.status.success(), "push failed: {:?}", pushed.lines);
    assert_eq!(last_line(pushed.stdout.as_bytes()), "during");
    let deadline = Instant::now() + Duration::from_secs(60);
    while spooled(&server) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(spooled(&server), 0, "spool did not drain");

    // No loss, no duplicates: every page of both jobs is in S3 once and opens byte-identical.
    assert_eq!(moto.count(&format!("tenants/dev/jobs/{job_before}/")), 4);
    assert_eq!(moto.count("tenants/dev/jobs/during/"), 13);
    for (job, dir) in [(job_before.as_str(), &before), ("during", &during)] {
        let restored = server.path().join(format!("restored-{job}"));
        server.get_ok(job, &restored);
        for f in walk(dir) {
            assert!(
                std::fs::read(&f).unwrap()
                    == std::fs::read(restored.join(f.file_name().unwrap())).unwrap(),
                "{job}: {} differs",
                f.display()
            );
        }
    }
    eprintln!(
        "outage: {acked_in_outage} pages acknowledged from the spool while S3 was stopped, \
         {waiting} records waiting at push-back; first push-back: {busy}"
    );
}
