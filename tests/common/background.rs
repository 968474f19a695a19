//! A `quire push` running in the background while a test breaks something, its stderr
//! collected line by line as it comes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{TestServer, BIN};

pub struct BackgroundPush {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundPush {
    /// Starts `quire push DIR --job JOB --no-progress EXTRA…` against `server`.
    pub fn start(server: &TestServer, dir: &Path, job: &str, extra: &[&str]) -> BackgroundPush {
        let mut child = Command::new(BIN)
            .args(["push", dir.to_str().unwrap(), "--job", job, "--no-progress"])
            .args(extra)
            .current_dir(server.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l);
                }
            })
        };
        BackgroundPush {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// The stderr lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first stderr line containing `needle`, waiting up to `limit` for it.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?}: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many pages the scanner was told are stored.
    pub fn acknowledged(&self) -> usize {
        acknowledged(&self.lines())
    }

    /// Waits for the push to end: its status, stdout and every stderr line.
    pub fn finish(mut self) -> Finished {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        Finished {
            status,
            stdout,
            lines: self.lines(),
        }
    }
}

/// How a background push ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub lines: Vec<String>,
}

impl Finished {
    /// How many pages the scanner was told are stored, over the whole push.
    pub fn acknowledged(&self) -> usize {
        acknowledged(&self.lines)
    }
}

fn acknowledged(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.starts_with("stored page"))
        .count()
}
