//! Events the audit log records besides administrative actions and document reads: the
//! server's start with the SHA-256 of its configuration file, every enrollment (the token
//! presented, then the outcome), and failed authentications, one record per source address
//! per minute (and at shutdown) rather than one per attempt.

use std::time::Duration;

use crate::common::*;
use quire_client::credential::CredentialFile;

fn audit_lines(server: &TestServer) -> Vec<serde_json::Value> {
    std::fs::read_to_string(server.path().join("quire-data/audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn start_enrollments_and_failed_logins_are_on_the_record() {
    let mut server = TestServer::start_with_config("[limits]\n");
    let config = std::fs::read(server.path().join("quire.toml")).unwrap();
    let start: Vec<_> = audit_lines(&server)
        .into_iter()
        .filter(|e| e["action"] == "server.start")
        .collect();
    assert_eq!(start.len(), 1, "{start:?}");
    let detail = start[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("config_sha256={}", sha256_hex(&config))),
        "{detail}"
    );

    // One enrollment that works, and the same token again.
    let admin = server.admin_cred_path();
    let token = server.token(admin.to_str().unwrap(), "dev");
    let enroll = |id: &str| {
        server.quire(&[
            "enroll",
            "--server",
            &server.addr.to_string(),
            "--token",
            &token,
            "--device-id",
            id,
            "--out",
            server.path().join(format!("{id}.cred")).to_str().unwrap(),
        ])
    };
    assert!(enroll("scanner-a").status.success());
    assert!(!enroll("scanner-b").status.success());

    // Two pushes with a wrong secret.
    let mut forged = server.device_cred();
    forged.secret = "ab".repeat(32);
    let forged_path = server.path().join("forged.cred");
    forged.save(&forged_path).unwrap();
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("p.txt"), "page").unwrap();
    for _ in 0..2 {
        assert!(!server.push_as(&job, &forged_path).status.success());
    }

    // Failed logins are written at the minute's end or at shutdown: stop the server.
    server.signal("-TERM");
    assert!(
        server.wait_exit(Duration::from_secs(30)).is_some(),
        "no exit"
    );

    let log = audit_lines(&server);
    let enrolled: Vec<_> = log
        .iter()
        .filter(|e| e["action"] == "device.enroll")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["tenant"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(enrolled.contains(&("scanner-a".into(), String::new(), "started".into())));
    assert!(enrolled.contains(&("scanner-a".into(), "dev".into(), "ok".into())));
    assert!(
        enrolled
            .iter()
            .any(|(who, _, outcome)| who == "scanner-b" && outcome.starts_with("refused")),
        "{enrolled:?}"
    );
    let failed: Vec<_> = log
        .iter()
        .filter(|e| e["action"] == "auth.failed")
        .collect();
    assert_eq!(failed.len(), 1, "one record for the one source: {failed:?}");
    assert_eq!(failed[0]["actor"], "127.0.0.1");
    let detail = failed[0]["detail"].as_str().unwrap();
    let count: u64 = detail
        .split_whitespace()
        .find_map(|w| w.strip_prefix("failures="))
        .unwrap()
        .parse()
        .unwrap();
    // Two forged pushes and the spent token.
    assert!(count >= 3, "{detail}");
    assert!(
        !detail.contains(&"ab".repeat(32)),
        "a secret in the audit log"
    );
}
