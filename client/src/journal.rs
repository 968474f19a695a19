//! The push journal: what a scanner remembers about each job directory between runs, so that
//! "run the same command again" resumes what was interrupted and never stores a committed
//! directory a second time (for e-invoicing, a document booked twice).
//!
//! Per directory and credential (named by a digest of the directory's canonical path, the
//! tenant and the device id) under the state directory:
//! - `<digest>.job`: the job id an unfinished push is using and its upload id (one line:
//!   `<job id> <upload id hex>`). Older versions wrote the job id alone and named the file by
//!   the path alone; such files are still picked up for a resume (with a new upload id).
//! - `<digest>.lock`: held (`flock`) while a push of the directory runs, so a second
//!   `quire push` of it with the same credential stops at once instead of racing the first.
//! - `<digest>.done`: `quire-push-done 1` then one line per commit: `<job id> <contents>`,
//!   where contents is a SHA-256 over the names, sizes and digests of the pages committed.
//!   The same pages are skipped; changed pages make a new job.

use std::io::Write;
use std::path::{Path, PathBuf};

use quire_codecs::wire::{self, PageEntry, UploadId};
use sha2::{Digest, Sha256};

use super::{local_err, ClientError};

const DONE_HEADER: &str = "quire-push-done 1";

/// A digest of exactly which pages a directory holds.
pub fn contents_digest<'a>(pages: impl IntoIterator<Item = &'a PageEntry>) -> String {
    let mut h = Sha256::new();
    for p in pages {
        h.update(p.index.to_be_bytes());
        h.update((p.name.len() as u16).to_be_bytes());
        h.update(p.name.as_bytes());
        h.update(p.size.to_be_bytes());
        h.update(p.sha256);
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
    lock: PathBuf,
}

/// A push this journal noted as under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub job_id: String,
    /// `None` when an older version noted it.
    pub upload: Option<UploadId>,
}

/// Held while a push of the directory runs; released when dropped (or the process ends).
#[derive(Debug)]
pub struct PushLock(#[allow(dead_code)] std::fs::File);

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
        Ok(Self::of_canonical(state_dir, &canonical, tenant, device_id))
    }

    /// The journal of the directory at the canonical path `canonical` (which need not exist
    /// any more: the agent forgets a job's journal after moving the job away).
    pub fn of_canonical(
        state_dir: &Path,
        canonical: &Path,
        tenant: &str,
        device_id: &str,
    ) -> Journal {
        let path = canonical.as_os_str().as_encoded_bytes();
        let legacy = hex::encode(&Sha256::digest(path)[..12]);
        let mut h = Sha256::new();
        h.update(path);
        h.update([0]);
        h.update(tenant.as_bytes());
        h.update([0]);
        h.update(device_id.as_bytes());
        let stem = hex::encode(&h.finalize()[..12]);
        Journal {
            state_dir: state_dir.to_path_buf(),
            unfinished: state_dir.join(format!("{stem}.job")),
            legacy_unfinished: state_dir.join(format!("{legacy}.job")),
            done: state_dir.join(format!("{stem}.done")),
            lock: state_dir.join(format!("{stem}.lock")),
        }
    }

    /// Removes the journal's files (a job the agent has finished with for good).
    pub fn forget(&self) -> Result<(), ClientError> {
        for path in [&self.unfinished, &self.done, &self.lock] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local_err(path, e)),
            }
        }
        Ok(())
    }

    /// Takes the directory's push lock, or says that another push of it is running.
    pub fn lock(&self, dir: &Path) -> Result<PushLock, ClientError> {
        std::fs::create_dir_all(&self.state_dir).map_err(|e| local_err(&self.state_dir, e))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| local_err(&self.lock, e))?;
        match f.try_lock() {
            Ok(()) => Ok(PushLock(f)),
            Err(std::fs::TryLockError::WouldBlock) => Err(local_err(
                dir,
                "another `quire push` of this directory with the same credential is running; \
                 let it finish (or stop it) and run this again",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(local_err(&self.lock, e)),
        }
    }

    /// Whether this journal noted any commit of the directory (only then can its pages be
    /// ones committed before).
    pub fn remembers_commits(&self) -> bool {
        self.done.exists()
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

    /// The job (and upload) an interrupted push of this directory was using.
    pub fn unfinished(&self) -> Result<Option<Unfinished>, ClientError> {
        for path in [&self.unfinished, &self.legacy_unfinished] {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let mut words = text.split_whitespace();
                    let (Some(job_id), upload) = (words.next(), words.next()) else {
                        continue;
                    };
                    if wire::validate_job_id(job_id).is_ok() {
                        return Ok(Some(Unfinished {
                            job_id: job_id.to_string(),
                            upload: upload.and_then(UploadId::from_hex),
                        }));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(local_err(path, e)),
            }
        }
        Ok(None)
    }

    /// Notes that a push of this directory as `job_id` by `upload` is under way, before the
    /// server hears of either, so that a crash at any point resumes the same upload.
    pub fn begin(&self, job_id: &str, upload: UploadId) -> Result<(), ClientError> {
        std::fs::create_dir_all(&self.state_dir).map_err(|e| local_err(&self.state_dir, e))?;
        let tmp = self.unfinished.with_extension("job.tmp");
        // Durable before the rename and the rename before the server is asked: losing the
        // upload id would leave the job bound to an upload nobody can resume.
        let mut f = std::fs::File::create(&tmp).map_err(|e| local_err(&tmp, e))?;
        f.write_all(format!("{job_id} {upload}\n").as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| local_err(&tmp, e))?;
        std::fs::rename(&tmp, &self.unfinished).map_err(|e| local_err(&self.unfinished, e))?;
        std::fs::File::open(&self.state_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| local_err(&self.state_dir, e))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(state: &Path, dir: &Path) -> Journal {
        Journal::open(state, dir, "acme", "scanner-1").unwrap()
    }

    #[test]
    fn an_unfinished_push_keeps_its_upload_and_older_notes_still_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let (state, dir) = (tmp.path().join("state"), tmp.path().join("pages"));
        std::fs::create_dir(&dir).unwrap();
        let j = journal(&state, &dir);
        assert_eq!(j.unfinished().unwrap(), None);
        let id = UploadId([0xab; 16]);
        j.begin("job-1", id).unwrap();
        let got = j.unfinished().unwrap().unwrap();
        assert_eq!((got.job_id.as_str(), got.upload), ("job-1", Some(id)));
        // Another credential's push of the same directory has a journal of its own.
        let other = Journal::open(&state, &dir, "acme", "scanner-2").unwrap();
        assert_eq!(other.unfinished().unwrap(), None);
        // The one-line note of older versions: the job id, no upload.
        std::fs::write(&j.unfinished, "job-0\n").unwrap();
        let got = j.unfinished().unwrap().unwrap();
        assert_eq!((got.job_id.as_str(), got.upload), ("job-0", None));
        // A note that is not a job id is ignored, not trusted.
        std::fs::write(&j.unfinished, "../../etc x\n").unwrap();
        assert_eq!(j.unfinished().unwrap(), None);
    }

    #[test]
    fn one_push_of_a_directory_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let (state, dir) = (tmp.path().join("state"), tmp.path().join("pages"));
        std::fs::create_dir(&dir).unwrap();
        let j = journal(&state, &dir);
        let held = j.lock(&dir).unwrap();
        let e = journal(&state, &dir).lock(&dir).unwrap_err();
        assert!(e.to_string().contains("another `quire push`"), "{e}");
        drop(held);
        journal(&state, &dir).lock(&dir).unwrap();
    }
}
