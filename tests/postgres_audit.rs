//! The audit trail with the metadata in PostgreSQL: a tenant's records form one chain
//! whichever node wrote them (the database orders the appends), both nodes sign checkpoints of
//! it without contradicting each other, and `audit verify` and `audit export` read the same
//! chain through either node.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::audit_chain::verify_in_python;
use crate::common::postgres::fresh_database;
use crate::common::*;
use crate::postgres_nodes::second_node;
use quire_audit::record::{parse_line, Line};
use quire_audit::{ChainVerifier, Entry, LogLine, Start};
use quire_server::meta::{MetaStore, PgMeta, PgTarget};

fn node(url: &str) -> PgMeta {
    PgMeta::open(&PgTarget {
        url: url.to_string(),
        password: None,
        pool_size: 4,
        ca: None,
    })
    .unwrap()
}

fn entry(tenant: &str) -> Entry<'_> {
    Entry {
        actor: "admin-ü",
        role: "service-admin",
        action: "device.create",
        tenant,
        detail: "id=scanner-1",
        outcome: "ok",
    }
}

/// psql's error for `sql`, which must fail.
fn psql_fails(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{sql} was carried out");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Eight writers on two nodes append to two chains at once: each chain is whole, numbered
/// without gaps or repeats, stamped in order, and read back across several pages.
#[test]
fn writers_on_two_nodes_make_one_chain_per_tenant() {
    let url = fresh_database();
    let nodes = [node(&url), node(&url)];
    let trails: Vec<_> = nodes.iter().map(|n| n.audit_trail(1000).unwrap()).collect();
    // 1,100 records of acme: several pages of the reader (256 records each).
    std::thread::scope(|s| {
        for i in 0..8 {
            let trail = &trails[i % 2];
            let (tenant, n) = if i < 4 { ("acme", 275) } else { ("", 10) };
            s.spawn(move || {
                for _ in 0..n {
                    trail.record(entry(tenant)).unwrap();
                }
            });
        }
    });
    for (tenant, n) in [("acme", 1100u64), ("", 40)] {
        let mut verifier = ChainVerifier::new(tenant, Start::Genesis, vec![]);
        let mut stamps = Vec::new();
        for line in trails[1].lines(tenant).unwrap() {
            let line = line.unwrap();
            if let LogLine::Line { bytes, .. } = &line {
                match parse_line(bytes).unwrap() {
                    Line::Chained(r) => stamps.push(r.ts_unix_ms),
                    Line::Legacy { .. } => panic!("a legacy line in the database"),
                }
            }
            verifier.feed(&line);
        }
        let report = verifier.finish();
        assert_eq!(
            (report.problem, report.records, report.head_seq),
            (None, n, n),
            "chain {tenant:?}"
        );
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "stamps out of order"
        );
        assert_eq!(trails[0].head(tenant).unwrap().unwrap().seq, n);
    }
    assert_eq!(
        trails[0].records_written() + trails[1].records_written(),
        1140
    );

    // A checkpoint noted by one node is seen by the other.
    assert_eq!(trails[0].unsigned_heads().unwrap().len(), 2);
    assert_eq!(trails[0].unsigned_records(), 1100);
    trails[1].signed("acme", 1100).unwrap();
    let left = trails[0].unsigned_heads().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].0.as_str(), left[0].1.seq), ("", 40));

    // Records are append-only in the database too.
    let e = psql_fails(&url, "UPDATE audit_records SET line = '{}' WHERE seq = 1");
    assert!(e.contains("append-only"), "{e}");
    let e = psql_fails(&url, "DELETE FROM audit_records WHERE tenant = 'acme'");
    assert!(e.contains("append-only"), "{e}");
}

fn admin(node: &TestServer, cred: &str, args: &[&str]) -> std::process::Output {
    let server = node.addr.to_string();
    let mut all = vec!["admin", "--credential", cred, "--server", &server];
    all.extend_from_slice(args);
    node.quire(&all)
}

/// `audit verify --json` for `dev` through `node`.
fn verify(node: &TestServer, cred: &str) -> serde_json::Value {
    let o = admin(
        node,
        cred,
        &["audit", "verify", "--tenant", "dev", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&last_line(&o.stdout)).unwrap()
}

/// Administrators acting through both nodes write one chain for their tenant: either node
/// verifies all of it, both sign checkpoints of it without a conflict, and its export passes
/// the independent verifier.
#[test]
fn a_tenants_trail_is_one_chain_whichever_node_wrote_it() {
    let url = fresh_database();
    let fast = "[audit]\ncheckpoint_interval_secs = 1\n";
    let a = TestServer::start_with_config(&format!(
        "[meta]\nkind = \"postgres\"\nurl = \"{url}\"\n{fast}"
    ));
    let b = second_node(&a, &url, fast);
    let cred = a.admin_cred_path();
    let cred = cred.to_str().unwrap();
    for i in 0..6 {
        let through = if i % 2 == 0 { &a } else { &b };
        let id = format!("scanner-{i}");
        let out = a.path().join(format!("{id}.cred"));
        let o = admin(
            through,
            cred,
            &[
                "device",
                "create",
                "--tenant",
                "dev",
                "--id",
                &id,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        !a.path().join("quire-data/audit.log").exists()
            && !b.path().join("quire-data/audit.log").exists(),
        "a node kept a trail of its own"
    );

    // Both nodes sign what the other wrote; wait until a checkpoint covers the head.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let report = verify(&b, cred);
        if report["head_seq"] == report["last_checkpoint_seq"] {
            break report;
        }
        assert!(Instant::now() < deadline, "no checkpoint came: {report}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(report["problem"], "", "{report}");
    // Each create is two records (started, ok) on the one chain, whoever served it.
    assert!(report["records"].as_u64().unwrap() >= 12, "{report}");
    assert_eq!(verify(&a, cred)["head_seq"], report["head_seq"]);
    for node in [&a, &b] {
        let log = node.log_text();
        assert!(!log.contains("disagrees with a signed checkpoint"), "{log}");
    }

    let export = b.path().join("dev-trail.jsonl");
    let o = admin(
        &b,
        cred,
        &[
            "audit",
            "export",
            "--tenant",
            "dev",
            "--out",
            export.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let checked = verify_in_python(&export, &[]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let summary = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(
        summary.contains(&format!("records={}", report["records"])),
        "{summary}"
    );
}

/// A data directory holding a single-node audit log is not started on a shared database,
/// which would leave that trail behind unread.
#[test]
fn a_single_node_audit_log_is_not_left_behind_silently() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database();
    std::fs::create_dir_all(dir.path().join("quire-data")).unwrap();
    std::fs::write(
        dir.path().join("quire-data/audit.log"),
        "{\"ts_unix_ms\":1,\"actor\":\"a\",\"role\":\"r\",\"action\":\"x\",\"tenant\":\"dev\",\"detail\":\"\",\"outcome\":\"ok\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("quire.toml"),
        with_dev_bootstrap(&format!("[meta]\nkind = \"postgres\"\nurl = \"{url}\"\n")),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", "quire.toml", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("audit.log") && err.contains("single-node") && err.contains("move it out"),
        "{err}"
    );
}
