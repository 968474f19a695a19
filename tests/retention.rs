//! Retention and delivery: `quire deliver` pulls, verifies and acknowledges jobs; the
//! tenant's policy deletes them (on delivery, or when their period ends); a legal hold blocks
//! every deletion until released; every deletion is in the audit log.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;

fn job_from_samples(server: &TestServer, name: &str, pages: usize) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let dir = server.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in walk(&src).into_iter().take(pages) {
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir
}

fn objects_of(server: &TestServer, job: &str) -> usize {
    server
        .stored_files()
        .iter()
        .filter(|p| p.to_string_lossy().contains(&format!("/jobs/{job}/")))
        .count()
}

fn ok(server: &TestServer, args: &[&str]) -> String {
    server.quire_ok(args)
}

/// `quire admin hold VERB --tenant dev EXTRA…`, which must succeed.
fn hold(server: &TestServer, verb: &str, extra: &[&str]) -> String {
    let mut args = vec!["admin", "hold", verb, "--tenant", "dev"];
    args.extend_from_slice(extra);
    ok(server, &args)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn audit(server: &TestServer) -> Vec<serde_json::Value> {
    std::fs::read_to_string(server.path().join("quire-data/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn deletions_of(server: &TestServer, job: &str) -> Vec<String> {
    audit(server)
        .into_iter()
        .filter(|e| e["action"] == "job.delete" && e["outcome"] == "ok")
        .filter(|e| {
            e["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("job={job} "))
        })
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn delete_on_delivery_deletes_acknowledged_jobs_unless_held() {
    let server = TestServer::start_with_config(
        "[tenants.dev]\nretention = \"delete-on-delivery\"\n[retention]\nsweep_interval_secs = 0.2\n",
    );
    let dir_a = job_from_samples(&server, "a", 3);
    let dir_b = job_from_samples(&server, "b", 2);
    let a = server.push_ok(&dir_a, &["--no-progress"]);
    let b = server.push_ok(&dir_b, &["--no-progress"]);
    assert_eq!(objects_of(&server, &a), 4);
    // What a writer killed mid-upload leaves beside a page (a later one stored it): part of
    // the job's ciphertext, so it goes with the job.
    let partial = server.path().join(format!(
        "quire-data/store/tenants/dev/jobs/{a}/pages/000000#7"
    ));
    std::fs::write(&partial, b"partial sealed bytes").unwrap();
    hold(&server, "set", &["--job", &b, "--reason", "case 2026-17"]);

    let out = server.path().join("delivered");
    let listing = ok(
        &server,
        &["deliver", "--tenant", "dev", "--out", out.to_str().unwrap()],
    );
    same_files(&dir_a, &out.join(&a));
    same_files(&dir_b, &out.join(&b));
    assert!(listing.contains(&format!("{a}\t3\t")), "{listing}");
    assert!(
        listing.contains("deleted from quire (4 objects)"),
        "{listing}"
    );
    assert!(
        listing.contains("kept: legal hold: case 2026-17"),
        "{listing}"
    );
    // Each delivered job has its signed manifest beside it: the folder is provably what was
    // scanned even after quire deleted its copy, offline, with the tenant's exported keys.
    let keys = server.path().join("keys.json");
    ok(
        &server,
        &[
            "admin",
            "signing-key",
            "export",
            "--tenant",
            "dev",
            "--out",
            keys.to_str().unwrap(),
        ],
    );
    let manifest = out.join(format!("{a}.manifest.json"));
    let proved = server.quire(&[
        "verify",
        out.join(&a).to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--public-key",
        keys.to_str().unwrap(),
    ]);
    assert!(
        proved.status.success(),
        "{}",
        String::from_utf8_lossy(&proved.stderr)
    );

    // `admin jobs` shows each job where it is: the delivered one deleted, the held one
    // delivered and held; one job alone with --job.
    let jobs: Vec<serde_json::Value> = ok(&server, &["admin", "jobs", "--tenant", "dev", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |id: &str| jobs.iter().find(|j| j["job"] == id).unwrap().clone();
    assert_eq!(row(&a)["state"], "deleted", "{jobs:?}");
    assert_eq!(
        (row(&a)["pages"].as_u64(), row(&a)["held"].as_bool()),
        (Some(3), Some(false))
    );
    assert!(row(&a)["deleted_unix"].as_u64().is_some());
    assert_eq!(row(&b)["state"], "delivered", "{jobs:?}");
    assert_eq!(row(&b)["held"], true);
    assert!(row(&b)["deleted_unix"].is_null());
    let one = ok(&server, &["admin", "jobs", "--tenant", "dev", "--job", &b]);
    assert!(
        one.contains(&b) && one.contains("delivered+held") && !one.contains(&a),
        "{one}"
    );

    // The delivered job is gone, for `get` too; the held one is untouched.
    assert_eq!(objects_of(&server, &a), 0);
    assert!(!partial.exists());
    assert_eq!(objects_of(&server, &b), 3);
    let gone = server.quire(&["get", "--job", &a, "--out", "x"]);
    assert!(!gone.status.success());
    let again = ok(
        &server,
        &["deliver", "--tenant", "dev", "--out", out.to_str().unwrap()],
    );
    assert_eq!(again.trim(), "", "nothing left to deliver: {again}");
    let recorded = deletions_of(&server, &a);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(recorded[0].contains("reason=delivered"), "{recorded:?}");

    // Releasing the hold lets the sweeper do what the policy says.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(objects_of(&server, &b), 3, "deleted while held");
    hold(&server, "release", &["--job", &b]);
    // The audit record is written last, after the objects are gone.
    wait_until("the released job's deletion is recorded", || {
        !deletions_of(&server, &b).is_empty()
    });
    assert_eq!(objects_of(&server, &b), 0);
    let recorded = deletions_of(&server, &b);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(audit(&server)
        .iter()
        .any(|e| e["action"] == "job.delete" && e["actor"] == "retention-sweeper"));
}

#[test]
fn a_ten_year_retention_expires_jobs_and_a_tenant_hold_blocks_it() {
    // Retention goes by the server's clock, which this test moves: ten years pass at once.
    let clock = std::sync::Arc::new(quire_server::clock::ShiftedClock::default());
    let server = TestServer::in_process_with(
        "[tenants.dev]\nretention = \"10y\"\n[retention]\nsweep_interval_secs = 0.1\n",
        clock.clone(),
    );
    hold(&server, "set", &["--reason", "tax audit"]);
    let dir = job_from_samples(&server, "c", 2);
    let job = server.push_ok(&dir, &["--no-progress"]);
    assert_eq!(objects_of(&server, &job), 3);
    // Ten calendar years are 3,652 or 3,653 days.
    clock.advance(3_660 * 86_400);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        objects_of(&server, &job),
        3,
        "expired job deleted under a hold"
    );
    let restored = server.path().join("restored");
    server.get_ok(&job, &restored);
    same_files(&dir, &restored);

    hold(&server, "release", &[]);
    wait_until("the expired job's deletion is recorded", || {
        !deletions_of(&server, &job).is_empty()
    });
    assert_eq!(objects_of(&server, &job), 0);
    let recorded = deletions_of(&server, &job);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(
        recorded[0].contains("retention period ended"),
        "{recorded:?}"
    );
    let released = server.quire(&["admin", "hold", "release", "--tenant", "dev"]);
    assert!(!released.status.success(), "no hold left to release");
}

#[test]
fn a_seven_year_retention_deletes_after_seven_calendar_years_and_not_a_day_before() {
    let clock = std::sync::Arc::new(quire_server::clock::ShiftedClock::default());
    let server = TestServer::in_process_with(
        "[tenants.dev]\nretention = \"7y\"\n[retention]\nsweep_interval_secs = 0.1\n",
        clock.clone(),
    );
    let dir = job_from_samples(&server, "kept-7y", 2);
    let job = server.push_ok(&dir, &["--no-progress"]);
    assert_eq!(objects_of(&server, &job), 3);
    const DAY: i64 = 86_400;
    // Seven calendar years from today span 2,556 or 2,557 days (one or two 29 Februaries).
    clock.advance(2_555 * DAY);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(objects_of(&server, &job), 3, "deleted before its time");
    assert!(deletions_of(&server, &job).is_empty());
    clock.advance(3 * DAY);
    // The audit record is written last, after the objects are gone and the job marked.
    wait_until("the job's deletion to be recorded", || {
        !deletions_of(&server, &job).is_empty()
    });
    assert_eq!(objects_of(&server, &job), 0);
    let recorded = deletions_of(&server, &job);
    assert!(
        recorded.len() == 1 && recorded[0].contains("retention period ended"),
        "{recorded:?}"
    );
}
