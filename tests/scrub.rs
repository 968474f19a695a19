//! `quire admin scrub` through the real server: a clean tenant scrubs clean; a deleted page,
//! a damaged one and an object no record names are each found and named; `--after` goes on
//! from a job; nothing of a page's content is in what the scrub prints.

use std::path::PathBuf;
use std::process::Output;

use crate::common::*;

fn scrub(server: &TestServer, extra: &[&str]) -> Output {
    let cred = server.admin_cred_path();
    let mut args = vec![
        "admin",
        "--credential",
        cred.to_str().unwrap(),
        "scrub",
        "--tenant",
        "dev",
        "--json",
    ];
    args.extend_from_slice(extra);
    server.quire(&args)
}

fn findings(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of(found: &[serde_json::Value], event: &str) -> Vec<String> {
    found
        .iter()
        .filter(|f| f["event"] == event)
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect()
}

fn object(server: &TestServer, key: &str) -> PathBuf {
    server.store_dir().join(key)
}

#[test]
fn missing_damaged_and_unrecorded_objects_are_found_and_named() {
    let server = TestServer::start();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    for job in ["alpha", "beta"] {
        server.push_ok(&samples, &["--no-progress", "--job", job]);
    }
    let clean = scrub(&server, &[]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let found = findings(&clean);
    let done = found.iter().find(|f| f["event"] == "done").unwrap();
    assert_eq!(
        (done["jobs"].as_u64(), done["objects"].as_u64()),
        (Some(2), Some(12))
    );
    let sample_bytes: u64 = walk(&samples)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        done["bytes"].as_u64(),
        Some(2 * sample_bytes),
        "every page read through"
    );

    // A page deleted, a page damaged, and a stray object under a job.
    std::fs::remove_file(object(&server, "tenants/dev/jobs/alpha/pages/000001")).unwrap();
    let damaged = object(&server, "tenants/dev/jobs/beta/pages/000002");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&damaged, bytes).unwrap();
    std::fs::copy(
        object(&server, "tenants/dev/jobs/alpha/pages/000000"),
        object(&server, "tenants/dev/jobs/alpha/pages/000099"),
    )
    .unwrap();

    let dirty = scrub(&server, &[]);
    assert!(!dirty.status.success());
    let found = findings(&dirty);
    assert_eq!(
        of(&found, "missing"),
        ["tenants/dev/jobs/alpha/pages/000001"]
    );
    assert_eq!(
        of(&found, "corrupt"),
        ["tenants/dev/jobs/beta/pages/000002"]
    );
    assert_eq!(
        of(&found, "orphaned"),
        ["tenants/dev/jobs/alpha/pages/000099"]
    );
    let said = String::from_utf8_lossy(&dirty.stderr);
    assert!(said.contains("1 missing, 1 corrupt, 1 orphaned"), "{said}");

    // Going on after the first job checks only the second.
    let rest = scrub(&server, &["--after", "alpha", "--max-mb-per-s", "1"]);
    let found = findings(&rest);
    assert_eq!(
        of(&found, "corrupt"),
        ["tenants/dev/jobs/beta/pages/000002"]
    );
    assert!(of(&found, "missing").is_empty() && of(&found, "orphaned").is_empty());
    let progress: Vec<&str> = found
        .iter()
        .filter(|f| f["event"] == "progress")
        .map(|f| f["job"].as_str().unwrap())
        .collect();
    assert_eq!(progress, ["beta"]);

    // The findings carry keys and reasons, never page content.
    let page = std::fs::read(samples.join("05-german.png")).unwrap();
    assert!(!contains(&dirty.stdout, &page[..64]));
}
