//! `--page-interval`: scanners feed pages at their own pace instead of as fast as the server
//! acknowledges them, so latency can be measured at an offered load below capacity.

mod common;

use common::{loadtest, report};

fn pages_in_three_seconds(extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    report(
        loadtest(dir.path(), &["--generate", "50k:1", "--pages-per-job", "2"])
            .args([
                "--generated-jobs",
                "4",
                "--scanners",
                "2",
                "--duration",
                "3",
            ])
            .args(["--concurrency", "1"])
            .args(extra),
    )
}

#[test]
fn paced_scanners_start_a_page_per_interval_and_say_what_they_offered() {
    let paced = pages_in_three_seconds(&["--page-interval", "0.5"]);
    assert_eq!(paced["errors"], 0, "{paced}");
    assert_eq!(paced["verified"], true, "{paced}");
    assert_eq!(paced["offered_pages_per_s"], 4.0, "{paced}");
    // Two lanes, a page each per half second (the first within the first interval): at most
    // 8 each, since a job of two pages begun before the end (at most 2.5 s in) is finished.
    let pages = paced["pages"].as_u64().unwrap();
    assert!((2..=16).contains(&pages), "{paced}");

    // Unpaced, the same scanners push as fast as they are acknowledged.
    let free = pages_in_three_seconds(&[]);
    assert!(free["offered_pages_per_s"].is_null(), "{free}");
    assert!(free["pages"].as_u64().unwrap() > 32, "{free}");
}
