//! A scanner on a network that drops UDP: two network namespaces joined by a veth pair, the
//! server in one, the scanner in the other, and an nftables rule in the scanner's dropping
//! every UDP datagram to the server's port. QUIC cannot get through there (`--transport quic`
//! fails); `quire push` on its defaults gets through over TCP and says so.
//!
//! Needs root, `ip` and `nft` (scripts/test.sh installs Debian's nftables).

use std::process::Command;
use std::time::Instant;

use crate::common::netns::Net;
use crate::common::*;

#[test]
fn with_udp_dropped_a_push_gets_through_over_tcp() {
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let (_server, cred) = net.serve_dev(BIN, dir.path());
    net.drop_udp_to(4433);

    let job = dir.path().join("job");
    std::fs::create_dir(&job).unwrap();
    for f in walk(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job")) {
        std::fs::copy(&f, job.join(f.file_name().unwrap())).unwrap();
    }
    let push = |transport: &str| {
        Command::new("ip")
            .args(["netns", "exec", &net.scanner_ns, BIN, "push"])
            .arg(&job)
            .args([
                "--no-progress",
                "--again",
                "--transport",
                transport,
                "--credential",
            ])
            .arg(&cred)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let began = Instant::now();
    let o = push("auto");
    let took = began.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("connected over TCP"), "{err}");
    eprintln!("push with UDP dropped, over the TCP fallback: {took:?}");

    // The rule does drop UDP: QUIC alone does not get through.
    let o = push("quic");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("timed out") || err.contains("no answer"),
        "{err}"
    );
}
