//! The README's first command, `scripts/quickstart.sh`, step by step with this build's
//! binary (the script adds only its release build): `quire serve` with no arguments in an
//! empty directory listens on 127.0.0.1:4433 and makes the development credentials; `quire
//! push samples/scan-job` with them prints the job id last; `quire get` brings every page back
//! byte-identical; the store holds the sealed pages and the manifest where the README says.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{contains, run, walk, BIN};

/// Stops the server however the test ends, with SIGTERM as the script's trap does.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the CLI in `dir` (the harness's `run`, which kills a command still running after
/// 60 s); the command must succeed. Its standard output.
fn quire(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(dir, args);
    assert!(ok, "quire {args:?}:\n{err}");
    out
}

/// Every file under `dir` (the harness's `walk`, in name order) by name, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn the_quickstart_serves_pushes_and_gets_the_sample_job_back_on_embedded_defaults() {
    let work = tempfile::tempdir().unwrap();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(work.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(work.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Serving(child);
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if said.send(line).is_err() {
                return;
            }
        }
    });
    let listening = heard
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "quire serve said nothing in 60 s:\n{}",
                std::fs::read_to_string(work.path().join("serve.log")).unwrap_or_default()
            )
        });
    assert_eq!(listening, "quire listening on 127.0.0.1:4433");
    let data = work.path().join("quire-data");
    assert!(data.join("dev/device.cred").is_file());
    assert!(data.join("dev/admin.cred").is_file());

    let pushed = quire(work.path(), &["push", samples.to_str().unwrap()]);
    let job = pushed
        .lines()
        .last()
        .expect("push prints the job id last")
        .trim();
    assert!(job.starts_with("job-"), "{pushed}");
    quire(work.path(), &["get", "--job", job, "--out", "restored"]);

    let originals = files(&samples);
    assert!(originals.len() >= 3, "the sample job has pages");
    assert_eq!(files(&work.path().join("restored")), originals);

    let stored = data.join("store/tenants/dev/jobs").join(job);
    assert!(stored.join("manifest").is_file());
    let sealed = files(&stored.join("pages"));
    assert_eq!(sealed.len(), originals.len());
    for ((_, object), (name, page)) in sealed.iter().zip(&originals) {
        assert!(object.starts_with(b"QRSO"), "{name} is not a sealed object");
        let head = &page[..page.len().min(64)];
        assert!(!head.is_empty(), "{name}: the sample pages are not empty");
        assert!(
            !contains(object, head),
            "{name}'s first bytes are in its stored object in the clear"
        );
    }
}
