//! `--idle-scanners`: the quiet part of a fleet connects first, stays connected (keep-alives)
//! while the others push, and is accounted for in the report.

use std::process::Command;

#[test]
fn idle_scanners_stay_connected_while_others_push() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_quire-loadtest"))
        .args([
            "--generate",
            "50k:2",
            "--pages-per-job",
            "2",
            "--generated-jobs",
            "2",
        ])
        .args(["--scanners", "2", "--jobs", "2", "--duration", "12"])
        .args(["--idle-scanners", "60", "--idle-ramp-up", "1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let text = String::from_utf8_lossy(&o.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&text[text.find('{').expect("a JSON report")..]).unwrap();
    let idle = &report["idle"];
    assert_eq!(idle["scanners"], 60, "{report}");
    assert_eq!(idle["connected"], 60, "{report}");
    assert_eq!(idle["connect_failures"], 0, "{report}");
    // Twelve seconds of pushing, past the 10 s idle timeout: keep-alives (every 2 s) kept
    // every idle one open.
    assert_eq!(idle["dropped"], 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["verified"], true, "{report}");
}
