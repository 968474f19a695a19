//! The audit trail is tamper-evident (docs/AUDIT.md): each tenant's records form a hash
//! chain, whose heads the server signs and writes once to the tenant's object store. Editing,
//! deleting, reordering or truncating records, rewriting the chain consistently, and
//! restoring an older copy of the log are each detected by `quire admin audit verify`, which
//! names the first bad record; an exported trail verifies with an independent Python verifier.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

/// Checkpoints every 2 records of a chain, or every 200 ms.
const CONFIG: &str = "[audit]\ncheckpoint_records = 2\ncheckpoint_interval_secs = 0.2\n";

fn log_path(server: &TestServer) -> PathBuf {
    server.path().join("quire-data/audit.log")
}

fn admin(server: &TestServer, args: &[&str]) -> std::process::Output {
    let cred = server.admin_cred_path();
    let mut all = vec!["admin", "--credential", cred.to_str().unwrap()];
    all.extend_from_slice(args);
    server.quire(&all)
}

/// `audit export --tenant dev` (plus `extra`) into `name` under the server's directory.
fn export_trail(server: &TestServer, name: &str, extra: &[&str]) -> PathBuf {
    let out = server.path().join(name);
    let mut args = vec![
        "audit",
        "export",
        "--tenant",
        "dev",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = admin(server, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// The independent Python verifier on an export.
pub(crate) fn verify_in_python(file: &Path, extra: &[&str]) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_audit.py");
    std::process::Command::new(python())
        .arg(&script)
        .arg(file)
        .args(extra)
        .output()
        .unwrap()
}

/// `audit verify --json` for `dev`: the report, and whether the command succeeded.
fn verify(server: &TestServer) -> (bool, serde_json::Value, String) {
    let o = admin(server, &["audit", "verify", "--tenant", "dev", "--json"]);
    let report = serde_json::from_str(&last_line(&o.stdout)).unwrap_or_default();
    (
        o.status.success(),
        report,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Waits until a checkpoint covers the newest record of `dev`'s chain; returns the report.
fn until_signed(server: &TestServer) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, report, err) = verify(server);
        assert!(ok, "an untouched chain must verify: {err}");
        if report["head_seq"] == report["last_checkpoint_seq"] {
            return report;
        }
        assert!(Instant::now() < deadline, "no checkpoint came: {report}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Audited actions on `dev`: each `device create` is two records (started, ok).
fn act(server: &TestServer, from: u32, to: u32) {
    for i in from..to {
        server.create_device("dev", &format!("scanner-{i}"), "device", false);
    }
}

/// Indexes of the lines of `dev`'s chain in the log.
fn dev_lines(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("\"v\":2") && l.contains("\"tenant\":\"dev\""))
        .map(|(i, _)| i)
        .collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Tampers with the log, checks verification fails naming `expect`, restores the log.
fn detected(server: &TestServer, what: &str, expect: &str, tamper: impl FnOnce(&mut Vec<String>)) {
    let path = log_path(server);
    let original = std::fs::read(&path).unwrap();
    let mut lines = read_lines(&path);
    tamper(&mut lines);
    write_lines(&path, &lines);
    let (ok, report, err) = verify(server);
    std::fs::write(&path, &original).unwrap();
    assert!(!ok, "{what}: not detected ({report})");
    let problem = report["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains(expect) && err.contains(expect),
        "{what}: expected {expect:?} in {problem:?} / {err}"
    );
}

#[test]
fn every_kind_of_tampering_is_detected_and_named() {
    let server = TestServer::start_with_config(CONFIG);
    act(&server, 0, 5);
    let report = until_signed(&server);
    assert!(report["records"].as_u64().unwrap() >= 10, "{report}");
    assert!(report["checkpoints"].as_u64().unwrap() >= 1, "{report}");
    // The checkpoints are objects in the tenant's store, outside its documents' prefix.
    let signed = walk(&server.store_dir().join("audit/tenant/dev"));
    assert!(!signed.is_empty());

    detected(&server, "an edited record", "edited", |lines| {
        let i = dev_lines(lines)[3];
        lines[i] = lines[i].replace("\"outcome\":\"ok\"", "\"outcome\":\"refused: no\"");
    });
    detected(&server, "a deleted record", "missing", |lines| {
        let i = dev_lines(lines)[3];
        lines.remove(i);
    });
    detected(
        &server,
        "reordered records",
        "record 4 is missing",
        |lines| {
            let d = dev_lines(lines);
            lines.swap(d[3], d[5]);
        },
    );
    detected(&server, "a truncated log", "truncated", |lines| {
        let cut = dev_lines(lines)[4];
        lines.truncate(cut);
    });
    detected(
        &server,
        "a consistently rewritten chain",
        "rewritten",
        |lines| {
            // Edit record 2 and recompute every hash after it: only the signature is missing.
            let mut prev = [0u8; 32];
            for i in dev_lines(lines) {
                let mut r: quire_audit::Record = serde_json::from_str(&lines[i]).unwrap();
                if r.seq == 2 {
                    r.detail = "nothing happened".into();
                }
                r.prev = prev;
                r.hash = r.computed_hash();
                prev = r.hash;
                lines[i] = r.to_line();
            }
        },
    );
    detected(&server, "a damaged line", "damaged", |lines| {
        let i = dev_lines(lines)[2];
        lines[i].truncate(30);
    });
    // Put back, the log verifies again.
    assert!(verify(&server).0);
}

#[test]
fn an_older_copy_of_the_log_restored_is_detected_after_a_restart() {
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server =
        TestServer::start_with_config(&format!("{CONFIG}[metrics]\nlisten = \"{metrics}\"\n"));
    act(&server, 0, 2);
    until_signed(&server);
    let old = std::fs::read(log_path(&server)).unwrap();
    act(&server, 2, 5);
    until_signed(&server);
    server.kill();
    std::fs::write(log_path(&server), &old).unwrap();
    server.restart();
    // The server goes on from the old copy's head, over records already signed.
    act(&server, 5, 7);
    let (ok, report, _) = verify(&server);
    assert!(!ok, "{report}");
    let problem = report["problem"].as_str().unwrap();
    assert!(problem.contains("older copy"), "{problem}");
    // The checkpointer, finding a signed record that disagrees, tells the operator.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .log_text()
        .contains("disagrees with a signed checkpoint")
    {
        assert!(Instant::now() < deadline, "{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, text) = http_get(metrics, "/metrics").unwrap();
    let conflicts = text
        .lines()
        .find_map(|l| l.strip_prefix("quire_audit_checkpoints_total{outcome=\"conflict\"} "))
        .unwrap_or_else(|| panic!("no conflict counted: {text}"));
    assert_ne!(conflicts.trim(), "0");
    assert!(text.contains("quire_audit_unsigned_records "), "{text}");
}

#[test]
fn an_exported_trail_verifies_independently_and_its_tampering_fails_there() {
    let server = TestServer::start_with_config(CONFIG);
    act(&server, 0, 4);
    let report = until_signed(&server);
    let export = export_trail(&server, "dev-trail.jsonl", &[]);
    let python = verify_in_python;
    let ok = python(&export, &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let summary = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        summary.contains(&format!("records={}", report["records"]))
            && !summary.contains("checkpoints=0"),
        "{summary}"
    );

    // The header's key is the one `audit verify` trusts; any other key fails.
    let text = std::fs::read_to_string(&export).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let (key_id, key) = header["public_keys"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .unwrap();
    let pinned = format!("{key_id}={key}");
    assert!(python(&export, &["--public-key", &pinned]).status.success());
    let wrong = format!("{key_id}={}", "11".repeat(32));
    assert!(!python(&export, &["--public-key", &wrong]).status.success());

    // Tampered exports fail in Python as in Quire.
    let tamper = |name: &str, f: &dyn Fn(&mut Vec<String>)| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        f(&mut lines);
        let path = server.path().join(name);
        write_lines(&path, &lines);
        let o = python(&path, &[]);
        assert!(!o.status.success(), "{name} passed the Python verifier");
    };
    tamper("edited.jsonl", &|l| {
        l[2] = l[2].replace("scanner-", "scammer-")
    });
    tamper("deleted.jsonl", &|l| {
        l.remove(3);
    });
    tamper("swapped.jsonl", &|l| l.swap(2, 4));
    tamper("truncated.jsonl", &|l| {
        let checkpoint = l
            .iter()
            .position(|x| x.starts_with("{\"checkpoint\""))
            .unwrap();
        l.drain(checkpoint - 2..checkpoint);
    });

    // An export from a given time starts mid-chain and still verifies.
    let since = export_trail(&server, "since.jsonl", &["--since", "2020-01-01T00:00:00Z"]);
    assert!(python(&since, &[]).status.success());
}

#[test]
fn only_the_tenants_own_admins_and_the_service_read_its_trail() {
    let server = TestServer::start_with_config(CONFIG);
    let o = admin(&server, &["tenant", "create", "other"]);
    assert!(o.status.success());
    let other_admin = server.create_device("other", "other-admin", "tenant-admin", true);
    let o = server.quire(&[
        "admin",
        "--credential",
        other_admin.to_str().unwrap(),
        "audit",
        "verify",
        "--tenant",
        "dev",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not found"), "{err}");
    let own = server.quire(&[
        "admin",
        "--credential",
        other_admin.to_str().unwrap(),
        "audit",
        "verify",
        "--tenant",
        "other",
    ]);
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
}

/// The "done when": a push, a read back, a support partner's read with its reason,
/// a delivery and the retention deletion it triggers are all in the tenant's exported trail,
/// which the Python verifier accepts.
#[test]
fn push_reads_and_retention_deletion_are_all_in_the_verified_export() {
    let server = TestServer::start_with_config(&format!(
        "{CONFIG}[tenants.dev]\nretention = \"delete-on-delivery\"\n"
    ));
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("invoice.pdf"), b"%PDF a page").unwrap();
    let id = server.push_ok(&job, &["--no-progress"]);
    server.get_ok(&id, &server.path().join("read-back"));

    // A support partner of another company reads under a grant, stating why.
    assert!(admin(&server, &["tenant", "create", "helpdesk"])
        .status
        .success());
    let partner = server.create_device("helpdesk", "hd-1", "support-partner", true);
    let o = admin(
        &server,
        &[
            "grant",
            "create",
            "--tenant",
            "dev",
            "--partner",
            "hd-1",
            "--hours",
            "1",
            "--reason",
            "ticket 9",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = server.quire(&[
        "get",
        "--job",
        &id,
        "--tenant",
        "dev",
        "--out",
        server.path().join("support").to_str().unwrap(),
        "--credential",
        partner.to_str().unwrap(),
        "--reason",
        "ticket 9: page looks blank",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Delivered, then deleted by the tenant's retention policy.
    let out = server.path().join("delivered");
    let o = server.quire(&["deliver", "--tenant", "dev", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    until_signed(&server);

    let export = export_trail(&server, "trail.jsonl", &[]);
    let checked = verify_in_python(&export, &[]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r.get("seq").is_some())
        .collect();
    let on_record = |actor: &str, action: &str, detail: &str| {
        records.iter().any(|r| {
            r["actor"] == actor
                && r["action"] == action
                && r["outcome"] == "ok"
                && r["detail"].as_str().unwrap().contains(detail)
        })
    };
    let device = server.device_cred().device_id.clone();
    assert!(on_record(&device, "job.commit", &id), "{records:#?}");
    assert!(on_record(&device, "document.read", &format!("job={id}")));
    assert!(on_record(
        "hd-1",
        "document.read",
        "reason=ticket 9: page looks blank"
    ));
    assert!(on_record("dev-admin", "grant.create", "partner=hd-1"));
    assert!(on_record("dev-admin", "delivery.ack", &id));
    assert!(
        records.iter().any(|r| r["action"] == "job.delete"
            && r["outcome"] == "ok"
            && r["detail"].as_str().unwrap().contains(&id)),
        "{records:#?}"
    );
}
