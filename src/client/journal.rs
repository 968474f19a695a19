//! The push journal: what a scanner remembers about each job directory between runs, so that
//! "run the same command again" resumes what was interrupted and never stores a committed
//! directory a second time (for e-invoicing, a document booked twice).
//!
//! Per directory and credential (named by a digest of the directory's canonical path, the
//! tenant and the device id) under the state directory:
//! - `<digest>.job`: the job id an unfinished push is using (one line). Older versions named
//!   it by the path alone; such a file is still picked up for a resume.
//! - `<digest>.done`: `quire-push-done 1` then one line per commit: `<job id> <contents>`,
//!   where contents is a SHA-256 over the names, sizes and digests of the pages committed.
//!   The same pages are skipped; changed pages make a new job.

use std::io::Write;
use std::path::{Path, PathBuf};

use quire_codecs::wire;
use sha2::{Digest, Sha256};

use super::push::LocalPage;
use super::{local_err, ClientError};

const DONE_HEADER: &str = "quire-push-done 1";

/// A digest of exactly which pages a directory holds.
pub fn contents_digest(pages: &[LocalPage]) -> String {
    let mut h = Sha256::new();
    for p in pages {
        h.update(p.entry.index.to_be_bytes());
        h.update((p.entry.name.len() as u16).to_be_bytes());
        h.update(p.entry.name.as_bytes());
        h.update(p.entry.size.to_be_bytes());
        h.update(p.entry.sha256);
    }
    hex::encode(h.finalize())
}

/// One directory's journal files.
#[derive(Debug)]
pub struct Journal {
    state_dir: PathBuf,
    unfinished: PathBuf,
    /// Where versions before per-credential journals kept the unfinished job id.
    legacy_unfinished: PathBuf,
    done: PathBuf,
}

impl Journal {
    /// The journal of `dir` pushed with the credential of `device_id` in `tenant`: another
    /// device pushing the same directory has its own.
    pub fn open(
        state_dir: &Path,
        dir: &Path,
        tenant: &str,
        device_id: &str,
    ) -> Result<Journal, ClientError> {
        let canonical = std::fs::canonicalize(dir).map_err(|e| local_err(dir, e))?;
        let path = canonical.as_os_str().as_encoded_bytes();
        let legacy = hex::encode(&Sha256::digest(path)[..12]);
        let mut h = Sha256::new();
        h.update(path);
        h.update([0]);
        h.update(tenant.as_bytes());
        h.update([0]);
        h.update(device_id.as_bytes());
        let stem = hex::encode(&h.finalize()[..12]);
        Ok(Journal {
            state_dir: state_dir.to_path_buf(),
            unfinished: state_dir.join(format!("{stem}.job")),
            legacy_unfinished: state_dir.join(format!("{legacy}.job")),
            done: state_dir.join(format!("{stem}.done")),
        })
    }

    /// The job these exact pages were committed as, if they were.
    pub fn committed(&self, contents: &str) -> Result<Option<String>, ClientError> {
        let text = match std::fs::read_to_string(&self.done) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(local_err(&self.done, e)),
        };
        let mut lines = text.lines();
        if lines.next() != Some(DONE_HEADER) {
            return Err(local_err(
                &self.done,
                "not a push journal this version understands; move it away to push anew",
            ));
        }
        Ok(lines
            .filter_map(|l| l.split_once(' '))
            .find(|(job, c)| *c == contents && wire::validate_job_id(job).is_ok())
            .map(|(job, _)| job.to_string()))
    }

    /// The job an interrupted push of this directory was using.
    pub fn unfinished(&self) -> Result<Option<String>, ClientError> {
        for path in [&self.unfinished, &self.legacy_unfinished] {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let j = text.trim();
                    if wire::validate_job_id(j).is_ok() {
                        return Ok(Some(j.to_string()));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local_err(path, e)),
            }
        }
        Ok(None)
    }

    /// Notes that a push of this directory as `job_id` is under way.
    pub fn begin(&self, job_id: &str) -> Result<(), ClientError> {
        std::fs::create_dir_all(&self.state_dir).map_err(|e| local_err(&self.state_dir, e))?;
        let tmp = self.unfinished.with_extension("job.tmp");
        std::fs::write(&tmp, job_id).map_err(|e| local_err(&tmp, e))?;
        std::fs::rename(&tmp, &self.unfinished).map_err(|e| local_err(&self.unfinished, e))
    }

    /// Records the commit (durably, before the unfinished note goes).
    pub fn committed_as(&self, job_id: &str, contents: &str) -> Result<(), ClientError> {
        let fresh = !self.done.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.done)
            .map_err(|e| local_err(&self.done, e))?;
        let mut text = String::new();
        if fresh {
            text.push_str(DONE_HEADER);
            text.push('\n');
        }
        text.push_str(&format!("{job_id} {contents}\n"));
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| local_err(&self.done, e))?;
        for path in [&self.unfinished, &self.legacy_unfinished] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local_err(path, e)),
            }
        }
        Ok(())
    }
}
