//! The agent's folders inside the watched one, and moving work through them. Every step is a
//! rename within one file system, so a crash at any point leaves each file in exactly one
//! place, and a restart knows from where a file is what remains to be done:
//!
//! ```text
//! DIR/.quire/jobs/<ms>-<name>/          staged: one job's files, fixed; pushed from here
//! DIR/.quire/jobs/<ms>-<name>.partial/  being gathered (several files): put back at start
//! DIR/.quire/done/<ms>-<name>/          committed, being deleted (after = delete)
//! DIR/.quire/state/                     the push journals of staged jobs
//! DIR/.sent/<name>/                     committed originals (after = move, the default)
//! DIR/.failed/<name>, <name>.reason.txt what could not be sent, and why
//! ```
//!
//! Nothing is deleted before the job holding it is committed.

use std::io;
use std::path::{Path, PathBuf};

/// What becomes of originals once their job is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum After {
    /// Moved to `DIR/.sent/`.
    #[default]
    Move,
    /// Deleted.
    Delete,
}

impl std::str::FromStr for After {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "move" => Ok(After::Move),
            "delete" => Ok(After::Delete),
            other => Err(format!(
                "{other:?}: after a commit, originals \"move\" to .sent/ or \"delete\""
            )),
        }
    }
}

const PARTIAL: &str = ".partial";

/// The agent's folders under the watched folder `root`.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// What [`Layout::open`] put right after a crash.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Files of a half-gathered job put back in the watched folder.
    pub unstaged: usize,
    /// Committed jobs whose deletion was finished.
    pub deleted: usize,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn jobs(&self) -> PathBuf {
        self.root.join(".quire/jobs")
    }

    fn done(&self) -> PathBuf {
        self.root.join(".quire/done")
    }

    /// Where the push journals of staged jobs live.
    pub fn state(&self) -> PathBuf {
        self.root.join(".quire/state")
    }

    /// Creates the agent's folders and finishes what a crash left half done.
    pub fn open(&self) -> io::Result<Recovered> {
        for d in [self.jobs(), self.done(), self.state()] {
            std::fs::create_dir_all(&d)?;
        }
        let mut recovered = Recovered::default();
        for dir in list_dirs(&self.jobs())? {
            let name = file_name(&dir);
            if name.ends_with(PARTIAL) {
                for f in list(&dir)? {
                    let back = unique(&self.root.join(raw_name(&f)));
                    std::fs::rename(&f, back)?;
                    recovered.unstaged += 1;
                }
                std::fs::remove_dir(&dir)?;
            } else if list(&dir)?.is_empty() {
                std::fs::remove_dir(&dir)?;
            }
        }
        for dir in list_dirs(&self.done())? {
            std::fs::remove_dir_all(&dir)?;
            recovered.deleted += 1;
        }
        Ok(recovered)
    }

    /// Stages a settled folder of the watched one as a job (one rename).
    pub fn stage_folder(&self, name: &str) -> io::Result<PathBuf> {
        let to = self.new_job_dir(name);
        std::fs::rename(self.root.join(name), &to)?;
        Ok(to)
    }

    /// Stages settled files of the watched folder as one job called `label`: gathered in a
    /// `.partial` folder first, which a restart undoes, then renamed into place.
    pub fn stage_files(&self, label: &str, names: &[String]) -> io::Result<PathBuf> {
        let to = self.new_job_dir(label);
        let partial = with_suffix(&to, PARTIAL);
        std::fs::create_dir(&partial)?;
        for n in names {
            match std::fs::rename(self.root.join(n), partial.join(n)) {
                Ok(()) => {}
                // Taken away by whoever put it there: nothing to send.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if list(&partial)?.is_empty() {
            std::fs::remove_dir(&partial)?;
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "every file vanished",
            ));
        }
        std::fs::rename(&partial, &to)?;
        Ok(to)
    }

    fn new_job_dir(&self, name: &str) -> PathBuf {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        unique(&self.jobs().join(format!("{ms:013}-{name}")))
    }

    /// Staged jobs, oldest first.
    pub fn staged(&self) -> io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = list_dirs(&self.jobs())?
            .into_iter()
            .filter(|d| !file_name(d).ends_with(PARTIAL))
            .collect();
        v.sort();
        Ok(v)
    }

    /// The name a staged job came in with.
    pub fn label(staged: &Path) -> String {
        let name = file_name(staged);
        name.split_once('-')
            .map_or(name.clone(), |(_, rest)| rest.to_string())
    }

    /// A staged job was committed: its originals move to `.sent/<name>` or are deleted.
    /// Returns where they went (`None`: deleted).
    pub fn finish(&self, staged: &Path, after: After) -> io::Result<Option<PathBuf>> {
        match after {
            After::Move => {
                let sent = self.root.join(".sent");
                std::fs::create_dir_all(&sent)?;
                let to = unique(&sent.join(Self::label(staged)));
                std::fs::rename(staged, &to)?;
                Ok(Some(to))
            }
            After::Delete => {
                // Out of the staged jobs first, so a crash mid-delete is never pushed again.
                let doomed = self.done().join(file_name(staged));
                std::fs::rename(staged, &doomed)?;
                std::fs::remove_dir_all(&doomed)?;
                Ok(None)
            }
        }
    }

    /// Moves a file that cannot be sent to `.failed/`, with a file saying why beside it.
    pub fn fail_file(&self, file: &Path, reason: &str) -> io::Result<PathBuf> {
        self.to_failed(file, raw_name(file), reason)
    }

    /// A staged job that cannot be sent at all goes to `.failed/` whole.
    pub fn fail_job(&self, staged: &Path, reason: &str) -> io::Result<PathBuf> {
        self.to_failed(staged, Self::label(staged).into(), reason)
    }

    /// Moves `path` to `.failed/<name>` (made unique) and writes `<name>.reason.txt`.
    fn to_failed(
        &self,
        path: &Path,
        name: std::ffi::OsString,
        reason: &str,
    ) -> io::Result<PathBuf> {
        let failed = self.root.join(".failed");
        std::fs::create_dir_all(&failed)?;
        let to = unique(&failed.join(name));
        std::fs::rename(path, &to)?;
        std::fs::write(with_suffix(&to, ".reason.txt"), format!("{reason}\n"))?;
        Ok(to)
    }
}

/// `path`, or `path~2`, `path~3`, … whichever does not exist yet (the name's bytes kept as
/// they are, UTF-8 or not).
fn unique(path: &Path) -> PathBuf {
    if std::fs::symlink_metadata(path).is_err() {
        return path.to_path_buf();
    }
    (2..)
        .map(|n| with_suffix(path, &format!("~{n}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .expect("some suffix is free")
}

/// `path` with `suffix` appended to its last component.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The last component, exactly.
fn raw_name(p: &Path) -> std::ffi::OsString {
    p.file_name().map(|n| n.to_os_string()).unwrap_or_default()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect()
}

fn list_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(list(dir)?.into_iter().filter(|p| p.is_dir()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = list(dir).unwrap().iter().map(|p| file_name(p)).collect();
        v.sort();
        v
    }

    #[test]
    fn a_job_goes_from_staged_to_sent_and_names_never_collide() {
        let root = tempfile::tempdir().unwrap();
        let l = Layout::new(root.path());
        l.open().unwrap();
        std::fs::create_dir(root.path().join("batch")).unwrap();
        std::fs::write(root.path().join("batch/p1.tif"), "1").unwrap();
        let staged = l.stage_folder("batch").unwrap();
        assert_eq!(Layout::label(&staged), "batch");
        assert_eq!(l.staged().unwrap(), vec![staged.clone()]);
        let sent = l.finish(&staged, After::Move).unwrap().unwrap();
        assert_eq!(sent, root.path().join(".sent/batch"));
        // The same folder name again lands beside, not on top.
        std::fs::create_dir(root.path().join("batch")).unwrap();
        std::fs::write(root.path().join("batch/p1.tif"), "2").unwrap();
        let again = l.stage_folder("batch").unwrap();
        let sent = l.finish(&again, After::Move).unwrap().unwrap();
        assert_eq!(sent, root.path().join(".sent/batch~2"));
        assert_eq!(std::fs::read(sent.join("p1.tif")).unwrap(), b"2");
    }

    #[test]
    fn a_half_gathered_job_is_put_back_and_a_half_deleted_one_finished() {
        let root = tempfile::tempdir().unwrap();
        let l = Layout::new(root.path());
        l.open().unwrap();
        // As a crash would leave them:
        let partial = root.path().join(".quire/jobs/0000000000001-quiet.partial");
        std::fs::create_dir(&partial).unwrap();
        std::fs::write(partial.join("a.jpg"), "a").unwrap();
        let doomed = root.path().join(".quire/done/0000000000002-x");
        std::fs::create_dir(&doomed).unwrap();
        std::fs::write(doomed.join("b.jpg"), "b").unwrap();
        std::fs::create_dir(root.path().join(".quire/jobs/0000000000003-empty")).unwrap();
        let r = l.open().unwrap();
        assert_eq!(
            r,
            Recovered {
                unstaged: 1,
                deleted: 1
            }
        );
        assert!(root.path().join("a.jpg").exists());
        assert!(l.staged().unwrap().is_empty());
        assert!(names(&root.path().join(".quire/done")).is_empty());
    }

    #[test]
    fn files_gathered_into_one_job_and_deleted_after_commit() {
        let root = tempfile::tempdir().unwrap();
        let l = Layout::new(root.path());
        l.open().unwrap();
        for n in ["a", "b"] {
            std::fs::write(root.path().join(n), n).unwrap();
        }
        let staged = l
            .stage_files("quiet", &["a".into(), "b".into(), "gone".into()])
            .unwrap();
        assert_eq!(names(&staged), vec!["a", "b"]);
        assert!(l.finish(&staged, After::Delete).unwrap().is_none());
        assert!(!staged.exists());
        assert_eq!(names(root.path()), vec![".quire"]);
    }

    #[test]
    fn what_cannot_be_sent_goes_to_failed_with_its_reason() {
        let root = tempfile::tempdir().unwrap();
        let l = Layout::new(root.path());
        l.open().unwrap();
        std::fs::write(root.path().join("bad.tif"), "x").unwrap();
        let to = l
            .fail_file(&root.path().join("bad.tif"), "unreadable")
            .unwrap();
        assert_eq!(to, root.path().join(".failed/bad.tif"));
        let why = std::fs::read_to_string(root.path().join(".failed/bad.tif.reason.txt")).unwrap();
        assert_eq!(why, "unreadable\n");
    }
}
