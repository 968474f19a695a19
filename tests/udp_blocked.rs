//! A scanner on a network that drops UDP: two network namespaces joined by a veth pair, the
//! server in one, the scanner in the other, and an nftables rule in the scanner's dropping
//! every UDP datagram to the server's port. QUIC cannot get through there (`--transport quic`
//! fails); `quire push` on its defaults gets through over TCP and says so.
//!
//! Needs root, `ip` and `nft` (scripts/test.sh installs Debian's nftables).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Two namespaces and the veth pair between them, removed when dropped.
struct Net {
    server_ns: String,
    scanner_ns: String,
    server_ip: String,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Net {
    fn new() -> Net {
        let id = std::process::id() % 100_000;
        let (s, c) = (format!("qudp-s{id}"), format!("qudp-c{id}"));
        let (a, b) = (format!("qu{id}a"), format!("qu{id}b"));
        let subnet = format!("10.{}.{}", 100 + id % 100, id % 250);
        for ns in [&s, &c] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
        }
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &c]);
        ip(&["link", "set", &b, "netns", &s]);
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &format!("{subnet}.1/24"),
            "dev",
            &a,
        ]);
        ip(&[
            "-n",
            &s,
            "addr",
            "add",
            &format!("{subnet}.2/24"),
            "dev",
            &b,
        ]);
        for (ns, dev) in [(&c, &a), (&s, &b)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        Net {
            server_ns: s,
            scanner_ns: c,
            server_ip: format!("{subnet}.2"),
        }
    }

    /// Drops every UDP datagram the scanner sends to `port`.
    fn drop_udp_to(&self, port: u16) {
        let rules = format!(
            "table inet quire_test {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    udp dport {port} drop\n  }}\n}}\n"
        );
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &self.scanner_ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (Debian package nftables)");
        use std::io::Write;
        nft.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(nft.wait().unwrap().success(), "nft refused the rules");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.scanner_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn with_udp_dropped_a_push_gets_through_over_tcp() {
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quire.toml"), "[dev]\nbootstrap = true\n").unwrap();
    let listen = format!("{}:4433", net.server_ip);
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _server = Killed(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.server_ns,
                BIN,
                "serve",
                "--config",
                "quire.toml",
            ])
            .args(["--listen", &listen])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let cred = dir.path().join("quire-data/dev/device.cred");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cred.exists() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
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
