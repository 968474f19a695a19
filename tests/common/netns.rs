//! Two network namespaces joined by a veth pair, for tests of what a scanner's network does
//! to it (nftables rules in the scanner's namespace). Needs root, `ip` and `nft`. Shared by
//! the root package's tests and the load generator's (`#[path]`), so it stands alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Two namespaces and the veth pair between them, removed when dropped.
pub struct Net {
    pub server_ns: String,
    pub scanner_ns: String,
    pub server_ip: String,
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
    pub fn new() -> Net {
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
    pub fn drop_udp_to(&self, port: u16) {
        self.scanner_output_rule(&format!("udp dport {port} drop"));
    }

    /// Adds `rule` to an nftables chain on the scanner's outgoing packets.
    pub fn scanner_output_rule(&self, rule: &str) {
        let rules = format!(
            "table inet quire_test {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    {rule}\n  }}\n}}\n"
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

impl Net {
    /// Starts `bin serve` (the `quire` binary) on the server's side on port 4433, on its
    /// embedded defaults with the development credential, in `dir`; returns it and the path
    /// of that credential once it exists.
    pub fn serve_dev(&self, bin: &str, dir: &Path) -> (Killed, PathBuf) {
        std::fs::write(dir.join("quire.toml"), "[dev]\nbootstrap = true\n").unwrap();
        let listen = format!("{}:4433", self.server_ip);
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let server = Killed(
            Command::new("ip")
                .args(["netns", "exec", &self.server_ns, bin, "serve"])
                .args(["--config", "quire.toml", "--listen", &listen])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let cred = dir.join("quire-data/dev/device.cred");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cred.exists() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        (server, cred)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.scanner_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
