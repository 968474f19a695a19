//! RFC 3161 time-stamps against a real time-stamp authority: OpenSSL's own TSA (`openssl ts
//! -reply`) behind HTTP (tests/interop/tsa_server.py). A tenant with `timestamp_url` gets
//! every commit's signature time-stamped; while its TSA is down a commit is refused (and
//! succeeds once it is back); `quire get` and `quire verify` show the TSA's time; OpenSSL's
//! verifier (through the independent Python verifier) accepts the token for the signature and
//! the TSA's certificate; a token taken from another job fails both verifiers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const TSA_CONFIG: &str = "\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = Quire Test TSA
[ tsa_ext ]
extendedKeyUsage = critical, timeStamping
basicConstraints = CA:FALSE
[ tsa ]
default_tsa = tsa1
[ tsa1 ]
dir = .
serial = ./serial
crypto_device = builtin
signer_cert = ./tsa.crt
signer_key = ./tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.5
digests = sha256
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
";

/// OpenSSL's TSA on a loopback port, with a key and certificate of its own.
struct Tsa {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Tsa {
    fn start() -> Tsa {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tsa.cnf"), TSA_CONFIG).unwrap();
        std::fs::write(dir.path().join("serial"), "01\n").unwrap();
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes", "-keyout", "tsa.key", "-out", "tsa.crt", "-days", "30",
            ])
            .args(["-config", "tsa.cnf", "-extensions", "tsa_ext"])
            .current_dir(dir.path())
            .output()
            .expect("openssl runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let port_file = dir.path().join("port");
        let child = Command::new(python())
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/tsa_server.py"))
            .arg(dir.path())
            .arg(&port_file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            assert!(Instant::now() < deadline, "the TSA did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Tsa {
            child,
            url: format!("http://127.0.0.1:{}/tsa", port.trim()),
            dir,
        }
    }

    fn down(&self, down: bool) {
        let flag = self.dir.path().join("down");
        if down {
            std::fs::write(flag, "").unwrap();
        } else {
            std::fs::remove_file(flag).unwrap();
        }
    }

    fn certificate(&self) -> PathBuf {
        self.dir.path().join("tsa.crt")
    }
}

impl Drop for Tsa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", said(&o));
    said(&o)
}

fn python_verifier(manifest: &Path, keys: &Path, folder: &Path, tsa: &Tsa) -> Output {
    Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_manifest.py"))
        .arg(manifest)
        .args(["--keys", keys.to_str().unwrap(), "--folder"])
        .arg(folder)
        .arg("--tsa-ca")
        .arg(tsa.certificate())
        .output()
        .unwrap()
}

#[test]
fn commits_are_time_stamped_by_the_tenants_authority() {
    let tsa = Tsa::start();
    let server =
        TestServer::start_with_config(&format!("[tenants.dev]\ntimestamp_url = \"{}\"\n", tsa.url));
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let push = |job: &str| {
        server.quire(&[
            "push",
            samples.to_str().unwrap(),
            "--job",
            job,
            "--no-progress",
        ])
    };

    // The TSA is down: the pages are stored, the commit is refused, retryable.
    tsa.down(true);
    let refused = push("stamped");
    assert_eq!(refused.status.code(), Some(3), "{}", said(&refused));
    assert!(
        said(&refused).contains("time-stamp authority"),
        "{}",
        said(&refused)
    );
    // Back: the same command resumes and commits.
    tsa.down(false);
    ok(push("stamped"));
    ok(push("other"));

    let out = server.path().join("out");
    let manifest = server.path().join("stamped.json");
    let got = server.get_with_manifest("stamped", &out, &manifest);
    assert!(got.contains("time-stamped at"), "{got}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(doc["v"], 2);
    let committed_s = doc["committed_unix_ms"].as_u64().unwrap() / 1000;

    let keys = server.path().join("keys.json");
    ok(server.quire(&[
        "admin",
        "signing-key",
        "export",
        "--tenant",
        "dev",
        "--out",
        keys.to_str().unwrap(),
    ]));
    let proved = ok(server.quire(&[
        "verify",
        out.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--public-key",
        keys.to_str().unwrap(),
    ]));
    let at: u64 = proved
        .split("time-stamped at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{proved}"));
    assert!(
        at.abs_diff(committed_s) <= 5,
        "TSA time {at}, commit {committed_s}"
    );
    // OpenSSL's verifier, through the independent one: the TSA signed this signature.
    let independent = ok(python_verifier(&manifest, &keys, &out, &tsa));
    assert!(independent.contains("timestamp=verified"), "{independent}");

    // Another job's token in this manifest: a real token, of this TSA, but not over this
    // signature; both verifiers refuse it.
    let other = server.path().join("other.json");
    server.get_with_manifest("other", &server.path().join("out-other"), &other);
    let other: serde_json::Value = serde_json::from_slice(&std::fs::read(&other).unwrap()).unwrap();
    let mut swapped = doc.clone();
    swapped["timestamp"] = other["timestamp"].clone();
    let tampered = server.path().join("swapped.json");
    std::fs::write(&tampered, serde_json::to_vec_pretty(&swapped).unwrap()).unwrap();
    let refused = server.quire(&[
        "verify",
        out.to_str().unwrap(),
        "--manifest",
        tampered.to_str().unwrap(),
        "--public-key",
        keys.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        said(&refused).contains("time-stamp does not belong"),
        "{}",
        said(&refused)
    );
    let refused = python_verifier(&tampered, &keys, &out, &tsa);
    assert!(!refused.status.success(), "{}", said(&refused));
    assert!(said(&refused).contains("time-stamp"), "{}", said(&refused));
}
