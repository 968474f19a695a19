//! The load generator against a server of its own, over each transport: QUIC, and QUIC
//! carried over TLS over TCP (`QUIRE_TRANSPORT=tcp`). Every page is stored and read back.

use std::process::Command;

#[test]
fn the_load_test_runs_over_quic_and_over_tcp() {
    for transport in ["quic", "tcp"] {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_quire-loadtest"))
            .args(["--generate", "50k:2,500k:1", "--pages-per-job", "3"])
            .args(["--generated-jobs", "2", "--scanners", "2", "--jobs", "2"])
            .env("QUIRE_TRANSPORT", transport)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{transport}: {err}");
        let text = String::from_utf8_lossy(&o.stdout);
        let start = text.find('{').expect("a JSON report");
        let report: serde_json::Value = serde_json::from_str(&text[start..])
            .unwrap_or_else(|e| panic!("{transport}: {e}: {text}"));
        assert_eq!(report["errors"], 0, "{transport}: {report}");
        assert_eq!(report["pages"], 12, "{transport}: {report}");
        assert_eq!(report["verified"], true, "{transport}: {report}");
    }
}

/// With `--child` the report carries the server's own costs: CPU per MB and context
/// switches per page, read from its process (what docs/PERFORMANCE.md quotes).
#[test]
fn a_child_server_reports_its_cpu_and_context_switches() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_quire-loadtest"))
        .args(["--generate", "50k:2,500k:1", "--pages-per-job", "3"])
        .args([
            "--generated-jobs",
            "2",
            "--scanners",
            "2",
            "--jobs",
            "2",
            "--child",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "{err} (needs the quire binary beside quire-loadtest: cargo build --bin quire)"
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let report: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(report["server_in_process"], false, "{report}");
    assert_eq!(report["pages"], 12, "{report}");
    let switches = report["server_context_switches_per_page"].as_f64().unwrap();
    assert!(switches > 0.0, "{report}");
    assert!(
        report["server_cpu_ms_per_mb"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}
