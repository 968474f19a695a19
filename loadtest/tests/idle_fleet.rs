//! `--idle-scanners`: the quiet part of a fleet connects first, stays connected (keep-alives)
//! while the others push, and is accounted for in the report.

mod common;

use common::{loadtest, report};

#[test]
fn idle_scanners_stay_connected_while_others_push() {
    let dir = tempfile::tempdir().unwrap();
    let report = report(
        loadtest(dir.path(), &["--generate", "50k:2", "--pages-per-job", "2"])
            .args(["--generated-jobs", "2", "--scanners", "2", "--jobs", "2"])
            .args([
                "--duration",
                "12",
                "--idle-scanners",
                "60",
                "--idle-ramp-up",
                "1",
            ]),
    );
    let idle = &report["idle"];
    assert_eq!(idle["scanners"], 60, "{report}");
    assert_eq!(idle["connected"], 60, "{report}");
    assert_eq!(idle["gave_up"], 0, "{report}");
    // Every scanner's connects, pushing and idle, are accounted for, and a quiet server
    // fails none of them.
    let connects = &report["connects"];
    assert_eq!(connects["scanners"], 62, "{report}");
    assert_eq!(connects["connected"], 62, "{report}");
    assert_eq!(connects["failed_during_ramp"], 0, "{report}");
    assert_eq!(connects["failed_after_ramp"], 0, "{report}");
    assert!(connects["ramped_up_after_s"].as_f64().is_some(), "{report}");
    assert!(
        connects["connect_ms"]["max"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // Twelve seconds of pushing, past the 10 s idle timeout: keep-alives (every 2 s) kept
    // every idle one open.
    assert_eq!(idle["dropped"], 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["verified"], true, "{report}");
}
