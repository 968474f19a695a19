//! A scanner whose first QUIC packets are lost (a lossy branch-office link) is not a scanner
//! behind a firewall that drops UDP. Two network namespaces, the server in one, scanners in
//! the other; nftables drops only the first five or so UDP datagrams scanners send (the
//! first one's QUIC Initial and its resends, two datagrams each). That scanner's handshake then outlasts the
//! head start and it connects over TCP; but its QUIC attempt completes later, so the next
//! scanner of the same process, started after that, must use QUIC again rather than stay on
//! TCP for ten minutes (on lossy links TCP was measured at a third of QUIC's rate:
//! docs/PERFORMANCE.md).
//!
//! Needs root, `ip` and `nft` (scripts/test.sh installs them), and the `quire` binary beside
//! `quire-loadtest` (built by `cargo test --workspace`).

#[path = "../../tests/common/netns.rs"]
#[allow(dead_code)]
mod netns;

mod common;

use common::report;
use std::process::Command;

#[test]
fn one_lost_handshake_packet_does_not_keep_scanners_on_tcp() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_quire-loadtest"));
    let quire = bin.with_file_name("quire");
    assert!(
        quire.exists(),
        "build the quire binary first (cargo build --bin quire)"
    );
    let net = netns::Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (_server, cred) = net.serve_dev(quire.to_str().unwrap(), dir.path());
    // A QUIC Initial is padded to at least 1200 bytes: this takes the first, and the two
    // resent after 0.3 s and the two after 0.6 s more: the handshake completes after 2.1 s,
    // long past the 0.5 s head start.
    net.scanner_output_rule("udp dport 4433 quota until 6000 bytes drop");

    let report = report(
        Command::new("ip")
            .args(["netns", "exec", &net.scanner_ns])
            .arg(bin)
            .args([
                "--server",
                &format!("{}:4433", net.server_ip),
                "--credential",
            ])
            .arg(&cred)
            .args([
                "--generate",
                "50k:2",
                "--pages-per-job",
                "2",
                "--generated-jobs",
                "2",
            ])
            // The second scanner starts 5 s after the first: after the first's QUIC
            // attempt has completed.
            .args(["--scanners", "2", "--jobs", "1", "--ramp-up", "10"])
            .current_dir(dir.path()),
    );
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    let connections = &report["connections"];
    // The rule does cost the first scanner its head start: it went over TCP (were this
    // not so, the test would prove nothing about what the second one does).
    assert_eq!(connections["tcp"], 1, "{report}");
    assert_eq!(connections["quic"], 1, "{report}");
}
