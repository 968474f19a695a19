//! The load generator against a server of its own, over each transport: QUIC, and QUIC
//! carried over TLS over TCP (`QUIRE_TRANSPORT=tcp`). Every page is stored and read back.

mod common;

use common::{loadtest, report};

#[test]
fn the_load_test_runs_over_quic_and_over_tcp() {
    for transport in ["quic", "tcp"] {
        let dir = tempfile::tempdir().unwrap();
        let report = report(
            loadtest(
                dir.path(),
                &["--generate", "50k:2,500k:1", "--pages-per-job", "3"],
            )
            .args(["--generated-jobs", "2", "--scanners", "2", "--jobs", "2"])
            .env("QUIRE_TRANSPORT", transport),
        );
        assert_eq!(report["errors"], 0, "{transport}: {report}");
        assert!(report["retries"].is_u64(), "{transport}: {report}");
        assert_eq!(report["pages"], 12, "{transport}: {report}");
        assert_eq!(report["verified"], true, "{transport}: {report}");
        // Every byte pushed crossed in one of the datagrams counted (at most 1,500 bytes
        // each on these links), and the server acknowledged them.
        let sent = &report["scanner_transport"];
        let bytes = report["bytes"].as_u64().unwrap();
        assert!(
            sent["datagrams_sent"].as_u64().unwrap() * 1500 >= bytes,
            "{transport}: {report}"
        );
        assert!(
            sent["acks_received"].as_u64().unwrap() > 0,
            "{transport}: {report}"
        );
        assert!(
            sent["datagrams_received"].as_u64().unwrap() > 0,
            "{transport}: {report}"
        );
    }
}

/// With `--child` the report carries the server's own costs: CPU per MB and context
/// switches per page, read from its process (what docs/PERFORMANCE.md quotes).
#[test]
fn a_child_server_reports_its_cpu_and_context_switches() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        std::path::Path::new(env!("CARGO_BIN_EXE_quire-loadtest"))
            .with_file_name("quire")
            .exists(),
        "build the quire binary first (cargo build --bin quire)"
    );
    let report = report(
        loadtest(
            dir.path(),
            &["--generate", "50k:2,500k:1", "--pages-per-job", "3"],
        )
        .args([
            "--generated-jobs",
            "2",
            "--scanners",
            "2",
            "--jobs",
            "2",
            "--child",
        ]),
    );
    assert_eq!(report["server_in_process"], false, "{report}");
    assert_eq!(report["pages"], 12, "{report}");
    let switches = report["server_context_switches_per_page"].as_f64().unwrap();
    assert!(switches > 0.0, "{report}");
    assert!(
        report["server_cpu_ms_per_mb"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}
