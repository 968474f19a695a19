//! Looking at the watched folder: what is at its top (and how it looks now), what cannot be
//! sent, and what a staged folder holds that the name rules leave out.

use std::io;
use std::path::{Path, PathBuf};

use super::settle::{self, Entry, NameRules};

/// Where a staged folder's left-out files wait (a hidden subfolder: push skips it, and it
/// goes to `.sent/` with the rest).
pub(super) const EXCLUDED: &str = ".excluded";

pub(super) struct Listing {
    pub entries: Vec<Entry>,
    /// Entries that can never be sent, and why (a name that is not UTF-8).
    pub unusable: Vec<(PathBuf, String)>,
}

fn modified_nanos(m: &std::fs::Metadata) -> u128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// The top of the watched folder: files and folders the rules take, each fingerprinted.
/// Symbolic links, FIFOs, sockets and devices are left alone.
pub(super) fn top(dir: &Path, rules: &NameRules) -> io::Result<Listing> {
    let mut listing = Listing {
        entries: Vec::new(),
        unusable: Vec::new(),
    };
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let path = item.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // gone since the listing
        };
        let kind = meta.file_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let Some(name) = item.file_name().to_str().map(str::to_string) else {
            let raw = item.file_name();
            if !raw.as_encoded_bytes().starts_with(b".") {
                listing
                    .unusable
                    .push((path, "the file name is not valid UTF-8".into()));
            }
            continue;
        };
        if !rules.takes(&name, kind.is_dir()) {
            continue;
        }
        let entry = if kind.is_file() {
            Entry {
                fingerprint: settle::file_fingerprint(&name, meta.len(), modified_nanos(&meta)),
                name,
                is_folder: false,
                has_files: false,
            }
        } else {
            let (fingerprint, has_files) = folder_fingerprint(&path, rules)?;
            Entry {
                name,
                is_folder: true,
                fingerprint,
                has_files,
            }
        };
        listing.entries.push(entry);
    }
    listing.entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listing)
}

/// Everything in a folder (names, sizes, times, hidden and temporary files included: a
/// `.part` growing inside means the folder is not finished), and whether it holds a file to
/// send.
fn folder_fingerprint(path: &Path, rules: &NameRules) -> io::Result<(u64, bool)> {
    let mut items = Vec::new();
    let mut has_files = false;
    let read = match std::fs::read_dir(path) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, false)),
        Err(e) => return Err(e),
    };
    for item in read {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(item.path()) else {
            continue;
        };
        if meta.is_file() && rules.takes(&name, false) {
            has_files = true;
        }
        items.push(settle::file_fingerprint(
            &name,
            meta.len(),
            modified_nanos(&meta),
        ));
    }
    items.sort_unstable();
    let fp = items
        .into_iter()
        .fold(0xcbf2_9ce4_8422_2325u64, settle::mix);
    Ok((fp, has_files))
}

/// Moves the files of a staged folder that the rules leave out into its `.excluded/`, so that
/// they travel with it to `.sent/` without being sent. Returns how many files will be sent.
pub(super) fn set_aside_excluded(staged: &Path, rules: &NameRules) -> io::Result<usize> {
    let mut sent = 0;
    for item in std::fs::read_dir(staged)? {
        let item = item?;
        let meta = std::fs::symlink_metadata(item.path())?;
        if !meta.is_file() {
            continue;
        }
        let name = item.file_name().to_string_lossy().into_owned();
        if rules.takes(&name, false) {
            sent += 1;
        } else if !name.starts_with('.') {
            let aside = staged.join(EXCLUDED);
            std::fs::create_dir_all(&aside)?;
            std::fs::rename(item.path(), aside.join(item.file_name()))?;
        }
    }
    Ok(sent)
}

/// Files of a staged job that cannot be opened for reading (permissions), and why.
pub(super) fn unreadable(job_dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(read) = std::fs::read_dir(job_dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .filter(|i| i.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|i| match std::fs::File::open(i.path()) {
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => Some((i.path(), format!("cannot be read: {e}"))),
        })
        .collect()
}

/// How many files of a staged job would be sent (regular files, not hidden).
pub(super) fn sendable(job_dir: &Path) -> usize {
    std::fs::read_dir(job_dir).map_or(0, |read| {
        read.filter_map(Result::ok)
            .filter(|i| i.file_type().is_ok_and(|t| t.is_file()))
            .filter(|i| !i.file_name().as_encoded_bytes().starts_with(b"."))
            .count()
    })
}
