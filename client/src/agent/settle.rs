//! Deciding when something dropped into the watched folder is complete, and what makes a job:
//! pure logic over snapshots of the folder (no file system here), so that it is tested with
//! made-up clocks and listings.
//!
//! A scanner or capture program writes a file in pieces and may pause between them; closing a
//! file is no proof that it is finished (some writers close after every piece). An entry is
//! therefore taken only once nothing about it — names, sizes, modification times — has changed
//! for the settle time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};

/// What a job is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grouping {
    /// Each subfolder of the watched folder is a job (files directly in it: one job each).
    #[default]
    PerFolder,
    /// Each file is a job.
    PerFile,
    /// Everything that arrived, once the folder has been quiet for the settle time, is one job.
    Quiet,
}

impl std::str::FromStr for Grouping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "folder" => Ok(Grouping::PerFolder),
            "file" => Ok(Grouping::PerFile),
            "quiet" => Ok(Grouping::Quiet),
            other => Err(format!(
                "{other:?}: a job is one \"folder\", one \"file\", or what arrived until the folder was \"quiet\""
            )),
        }
    }
}

/// Names that are never taken by default: hidden files (and the agent's own `.quire`,
/// `.sent`, `.failed`), office lock and temporary files, partial downloads and uploads.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".*",
    "~*",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.swp",
];

/// Which names are taken: matching an include glob (all, by default) and no exclude glob.
#[derive(Debug, Clone)]
pub struct NameRules {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl NameRules {
    /// `include` empty means every name; `exclude` adds to [`DEFAULT_EXCLUDES`] unless
    /// `no_default_excludes`. Hidden names stay excluded either way.
    pub fn new(
        include: &[String],
        exclude: &[String],
        no_default_excludes: bool,
    ) -> Result<NameRules, String> {
        let set = |globs: &mut dyn Iterator<Item = &str>| -> Result<GlobSet, String> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|e| format!("glob {g:?}: {e}"))?);
            }
            b.build().map_err(|e| e.to_string())
        };
        let defaults: &[&str] = if no_default_excludes {
            &[".*"]
        } else {
            DEFAULT_EXCLUDES
        };
        let include = if include.is_empty() {
            None
        } else {
            Some(set(&mut include.iter().map(String::as_str))?)
        };
        let exclude = set(&mut defaults
            .iter()
            .copied()
            .chain(exclude.iter().map(String::as_str)))?;
        Ok(NameRules { include, exclude })
    }

    /// Whether a file (or folder) called `name` is taken.
    pub fn takes(&self, name: &str, is_folder: bool) -> bool {
        if self.exclude.is_match(name) {
            return false;
        }
        // Include globs choose files; a folder is looked into whatever its name.
        is_folder || self.include.as_ref().is_none_or(|i| i.is_match(name))
    }
}

/// One thing at the top of the watched folder as a scan saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name in the watched folder.
    pub name: String,
    pub is_folder: bool,
    /// Changes whenever anything about it changes (names, sizes, times of what it holds).
    pub fingerprint: u64,
    /// For a folder, whether it holds any file to take (an empty folder is no job yet).
    pub has_files: bool,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    fingerprint: u64,
    /// When it was first seen with this fingerprint.
    since: Instant,
}

/// Remembers how long each entry has been unchanged.
#[derive(Debug, Default)]
pub struct Settler {
    seen: HashMap<String, Seen>,
    /// Quiet grouping: when the folder's whole listing last changed.
    quiet_since: Option<(u64, Instant)>,
}

/// What is ready to become jobs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ready {
    /// Each a job of its own: a folder (per-folder grouping) or a file.
    pub single: Vec<String>,
    /// Quiet grouping: these files together are one job.
    pub batch: Vec<String>,
}

impl Settler {
    /// Takes a scan made at `now`; entries no longer listed are forgotten.
    pub fn observe(&mut self, now: Instant, listing: &[Entry]) {
        let mut next = HashMap::with_capacity(listing.len());
        for e in listing {
            let seen = match self.seen.get(&e.name) {
                Some(s) if s.fingerprint == e.fingerprint => *s,
                _ => Seen {
                    fingerprint: e.fingerprint,
                    since: now,
                },
            };
            next.insert(e.name.clone(), seen);
        }
        self.seen = next;
        let whole = listing
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, e| mix(h, e.fingerprint));
        match self.quiet_since {
            Some((f, _)) if f == whole => {}
            _ => self.quiet_since = Some((whole, now)),
        }
    }

    /// What has been unchanged for `settle` at `now`, grouped as `grouping` says.
    pub fn ready(
        &self,
        now: Instant,
        settle: Duration,
        grouping: Grouping,
        listing: &[Entry],
    ) -> Ready {
        let settled = |name: &str| {
            self.seen
                .get(name)
                .is_some_and(|s| now.duration_since(s.since) >= settle)
        };
        let mut ready = Ready::default();
        match grouping {
            Grouping::PerFolder | Grouping::PerFile => {
                for e in listing {
                    let job = !e.is_folder || (grouping == Grouping::PerFolder && e.has_files);
                    if job && settled(&e.name) {
                        ready.single.push(e.name.clone());
                    }
                }
            }
            Grouping::Quiet => {
                let quiet = self
                    .quiet_since
                    .is_some_and(|(_, since)| now.duration_since(since) >= settle);
                if quiet {
                    ready.batch = listing
                        .iter()
                        .filter(|e| !e.is_folder)
                        .map(|e| e.name.clone())
                        .collect();
                }
            }
        }
        ready.single.sort();
        ready.batch.sort();
        ready
    }

    /// Forgets an entry (it was taken).
    pub fn taken(&mut self, name: &str) {
        self.seen.remove(name);
    }
}

/// Folds `v` into the hash `h` (FNV-1a over its bytes).
pub fn mix(mut h: u64, v: u64) -> u64 {
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The fingerprint of a file from what its metadata says.
pub fn file_fingerprint(name: &str, size: u64, modified_nanos: u128) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = mix(h, u64::from(b));
    }
    h = mix(h, size);
    mix(h, modified_nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, fp: u64) -> Entry {
        Entry {
            name: name.into(),
            is_folder: false,
            fingerprint: fp,
            has_files: false,
        }
    }

    fn folder(name: &str, fp: u64, has_files: bool) -> Entry {
        Entry {
            name: name.into(),
            is_folder: true,
            fingerprint: fp,
            has_files,
        }
    }

    const SETTLE: Duration = Duration::from_secs(2);

    #[test]
    fn a_file_is_ready_only_after_it_stopped_changing_for_the_settle_time() {
        let t0 = Instant::now();
        let mut s = Settler::default();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        // Written in pieces: the fingerprint changes every 0.5 s for 3 s.
        for i in 0..=6 {
            let listing = [file("scan.pdf", i)];
            s.observe(at(i as f64 * 0.5), &listing);
            let r = s.ready(at(i as f64 * 0.5), SETTLE, Grouping::PerFile, &listing);
            assert!(r.single.is_empty(), "taken half-written at piece {i}");
        }
        let listing = [file("scan.pdf", 6)];
        s.observe(at(4.0), &listing);
        assert!(s
            .ready(at(4.0), SETTLE, Grouping::PerFile, &listing)
            .single
            .is_empty());
        s.observe(at(5.1), &listing);
        assert_eq!(
            s.ready(at(5.1), SETTLE, Grouping::PerFile, &listing).single,
            vec!["scan.pdf".to_string()]
        );
    }

    #[test]
    fn folders_are_jobs_when_settled_and_not_empty() {
        let t0 = Instant::now();
        let mut s = Settler::default();
        let listing = [
            folder("batch-1", 1, true),
            folder("empty", 2, false),
            file("loose.jpg", 3),
        ];
        s.observe(t0, &listing);
        let later = t0 + SETTLE;
        s.observe(later, &listing);
        let r = s.ready(later, SETTLE, Grouping::PerFolder, &listing);
        assert_eq!(
            r.single,
            vec!["batch-1".to_string(), "loose.jpg".to_string()]
        );
        // Per file, folders are left alone.
        let r = s.ready(later, SETTLE, Grouping::PerFile, &listing);
        assert_eq!(r.single, vec!["loose.jpg".to_string()]);
    }

    #[test]
    fn quiet_grouping_waits_for_the_whole_folder_to_be_still() {
        let t0 = Instant::now();
        let mut s = Settler::default();
        let one = [file("a", 1)];
        s.observe(t0, &one);
        let two = [file("a", 1), file("b", 2)];
        s.observe(t0 + Duration::from_secs(1), &two);
        let at = t0 + Duration::from_secs(2);
        s.observe(at, &two);
        assert!(s.ready(at, SETTLE, Grouping::Quiet, &two).batch.is_empty());
        let at = t0 + Duration::from_secs(3);
        s.observe(at, &two);
        assert_eq!(
            s.ready(at, SETTLE, Grouping::Quiet, &two).batch,
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn temporary_and_hidden_names_are_skipped_and_globs_choose() {
        let r = NameRules::new(&[], &[], false).unwrap();
        for skipped in [
            ".hidden",
            ".~lock.x#",
            "~$report.docx",
            "a.tmp",
            "b.part",
            "c.crdownload",
        ] {
            assert!(!r.takes(skipped, false), "{skipped}");
        }
        for taken in ["scan.pdf", "page 1.tif", "Überweisung.jpg"] {
            assert!(r.takes(taken, false), "{taken}");
        }
        let r = NameRules::new(&["*.pdf".into()], &["draft*".into()], false).unwrap();
        assert!(r.takes("x.pdf", false));
        assert!(!r.takes("x.jpg", false));
        assert!(!r.takes("draft.pdf", false));
        assert!(r.takes("folder", true));
        let r = NameRules::new(&[], &[], true).unwrap();
        assert!(r.takes("a.tmp", false));
        assert!(!r.takes(".hidden", false));
        assert!(NameRules::new(&["[".into()], &[], false).is_err());
    }

    #[test]
    fn fingerprints_see_size_time_and_name() {
        let base = file_fingerprint("a", 10, 5);
        assert_ne!(base, file_fingerprint("a", 11, 5));
        assert_ne!(base, file_fingerprint("a", 10, 6));
        assert_ne!(base, file_fingerprint("b", 10, 5));
        assert_eq!(base, file_fingerprint("a", 10, 5));
    }
}
