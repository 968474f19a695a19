//! What a job directory holds: its pages, listed in name order, hashed only when a digest
//! is needed before sending.

use std::io::Read;
use std::path::{Path, PathBuf};

use quire_codecs::wire::{self, PageEntry};
use sha2::{Digest, Sha256};

use crate::{local_err, ClientError};

/// A page to send: a file, or bytes the caller handed over ([`super::push_pages`]).
#[derive(Debug, Clone)]
pub struct LocalPage {
    /// The file (for a page in memory, its name: errors name it).
    pub path: PathBuf,
    /// Index, name and size; the SHA-256 only when `hashed`.
    pub entry: PageEntry,
    /// Whether `entry.sha256` is the page's digest. A file not hashed yet is hashed while
    /// it is sent (its digest goes after its bytes), so it is read once.
    pub hashed: bool,
    /// The page's bytes when it is held in memory; `None` reads `path`.
    pub bytes: Option<bytes::Bytes>,
}

impl LocalPage {
    /// Hashes the page's file now, if it was not (a page the server may hold already, or a
    /// directory that may have been committed before: both compare digests first).
    /// Blocking file I/O.
    pub fn hash(&mut self) -> Result<(), ClientError> {
        if self.hashed {
            return Ok(());
        }
        let (sha256, size) = match &self.bytes {
            Some(b) => (Sha256::digest(b).into(), b.len() as u64),
            None => hash_file(&self.path)?,
        };
        self.entry.sha256 = sha256;
        self.entry.size = size;
        self.hashed = true;
        Ok(())
    }
}

/// Hashes every page not hashed yet. Blocking file I/O.
pub fn hash_pages(pages: &mut [LocalPage]) -> Result<(), ClientError> {
    pages.iter_mut().try_for_each(LocalPage::hash)
}

/// What a scan of a job directory found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The pages, in file-name order, not hashed yet.
    pub pages: Vec<LocalPage>,
    /// Entries that are not pages, with the reason each was left out.
    pub skipped: Vec<(PathBuf, &'static str)>,
}

/// Lists the pages of a job directory, in file-name order, with the defaults of
/// [`scan`]: symbolic links are not followed.
pub fn scan_dir(dir: &Path) -> Result<Vec<LocalPage>, ClientError> {
    scan(dir, false).map(|s| s.pages)
}

/// Lists the pages of a job directory (names and sizes; nothing is read). A page is a regular file whose name does
/// not start with `.`; hidden files, subdirectories, FIFOs, sockets and devices are skipped
/// and listed in [`Scan::skipped`], and so are symbolic links unless `follow_symlinks` (a
/// link could otherwise send `/etc/passwd` as a page).
pub fn scan(dir: &Path, follow_symlinks: bool) -> Result<Scan, ClientError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| local_err(dir, e))? {
        let item = item.map_err(|e| local_err(dir, e))?;
        let path = item.path();
        let own = std::fs::symlink_metadata(&path).map_err(|e| local_err(&path, e))?;
        let kind = if own.file_type().is_symlink() {
            if !follow_symlinks {
                skipped.push((
                    path,
                    "a symbolic link (--follow-symlinks to send its target)",
                ));
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) => m.file_type(),
                Err(_) => {
                    skipped.push((path, "a symbolic link to nothing"));
                    continue;
                }
            }
        } else {
            own.file_type()
        };
        if item.file_name().as_encoded_bytes().starts_with(b".") {
            skipped.push((path, "a hidden file"));
        } else if kind.is_dir() {
            skipped.push((path, "a subdirectory (push it as a job of its own)"));
        } else if !kind.is_file() {
            skipped.push((path, "not a regular file (FIFO, socket or device)"));
        } else {
            files.push((item.file_name(), path));
        }
    }
    files.sort();
    skipped.sort();
    if files.len() > wire::MAX_PAGES as usize {
        return Err(local_err(
            dir,
            format!("more than {} pages in one job", wire::MAX_PAGES),
        ));
    }
    let mut pages = Vec::with_capacity(files.len());
    for (i, (name, path)) in files.into_iter().enumerate() {
        let name = name
            .into_string()
            .map_err(|_| local_err(&path, "file name is not valid UTF-8"))?;
        wire::validate_page_name(&name).map_err(|e| local_err(&path, e))?;
        let size = std::fs::metadata(&path)
            .map_err(|e| local_err(&path, e))?
            .len();
        pages.push(LocalPage {
            path,
            entry: PageEntry {
                index: i as u32,
                name,
                size,
                sha256: [0; 32],
            },
            hashed: false,
            bytes: None,
        });
    }
    Ok(Scan { pages, skipped })
}

fn hash_file(path: &Path) -> Result<([u8; 32], u64), ClientError> {
    let mut f = std::fs::File::open(path).map_err(|e| local_err(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| local_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((h.finalize().into(), size))
}
