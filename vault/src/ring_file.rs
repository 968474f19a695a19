//! A tenant's wrapped intermediate keys on disk: `<dir>/<tenant>.kek`, one line per version,
//! `N <hex of the wrapped key>` or `N retired`. Lines are numbered from 1 without gaps, so a
//! lost or reordered line is detected. A shredded tenant leaves `<tenant>.shredded`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::backend::MAX_WRAPPED_LEN;
use crate::VaultError;

/// Longest keyring file read (about 500 versions of KMS-wrapped keys).
const MAX_FILE_LEN: u64 = 4 * 1024 * 1024;

/// One entry per version, from 1: its wrapped key, or `None` once retired.
pub type Versions = Vec<Option<Vec<u8>>>;

/// Where a keyring keeps its tenants' wrapped keys: files in the data directory
/// ([`RingDir`]), or a database that several nodes share (the server's PostgreSQL metadata
/// store). Wrapped keys open nothing without the backend that wrapped them.
pub trait RingStore: Send + Sync + std::fmt::Debug {
    /// Tenants with keys (shredded ones have none).
    fn tenants(&self) -> Result<Vec<String>, VaultError>;
    /// Every version of the tenant (empty if it has none yet); [`VaultError::Shredded`] once
    /// shredded.
    fn read(&self, tenant: &str) -> Result<Versions, VaultError>;
    /// Adds `version` (one more than the caller read). `Ok(false)` if another writer sharing
    /// the store added that version first: nothing was written.
    fn append(&self, tenant: &str, version: u32, wrapped: &[u8]) -> Result<bool, VaultError>;
    /// Forgets the wrapped key of `version` for good.
    fn retire(&self, tenant: &str, version: u32) -> Result<(), VaultError>;
    /// Marks the tenant shredded, before anything is destroyed: from then on nothing is read
    /// or created for it.
    fn mark_shredded(&self, tenant: &str) -> Result<(), VaultError>;
    /// Removes every wrapped key of the tenant.
    fn destroy(&self, tenant: &str) -> Result<(), VaultError>;
    /// Where the tenant's keys are kept, for messages.
    fn place(&self, tenant: &str) -> PathBuf;
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The keyring files of one backend.
#[derive(Debug, Clone)]
pub struct RingDir {
    dir: PathBuf,
}

impl RingDir {
    pub fn open(dir: &Path) -> Result<RingDir, VaultError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(RingDir {
            dir: dir.to_path_buf(),
        })
    }

    fn file(&self, tenant: &str) -> PathBuf {
        self.dir.join(format!("{tenant}.kek"))
    }

    fn tombstone(&self, tenant: &str) -> PathBuf {
        self.dir.join(format!("{tenant}.shredded"))
    }

    fn is_shredded(&self, tenant: &str) -> bool {
        self.tombstone(tenant).exists()
    }

    fn sync_dir(&self) {
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    /// Replaces the file with `versions` (a retirement), atomically.
    fn rewrite(&self, tenant: &str, versions: &Versions) -> Result<(), VaultError> {
        let path = self.file(tenant);
        let tmp = self.dir.join(format!(".{tenant}.kek.tmp"));
        let mut text = String::new();
        for (i, v) in versions.iter().enumerate() {
            match v {
                Some(w) => text.push_str(&format!("{} {}\n", i + 1, hex::encode(w))),
                None => text.push_str(&format!("{} retired\n", i + 1)),
            }
        }
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        // Overwrite the old file's bytes before it is replaced: best effort against reading a
        // retired key back from this file system (see docs/SECURITY.md for its limits).
        overwrite(&path)?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.sync_dir();
        Ok(())
    }
}

impl RingStore for RingDir {
    /// Tenants with a keyring file (shredded ones have none).
    fn tenants(&self) -> Result<Vec<String>, VaultError> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let name = item.map_err(io(&self.dir))?.file_name();
            if let Some(t) = name.to_str().and_then(|n| n.strip_suffix(".kek")) {
                out.push(t.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every version of the tenant (empty if it has none yet).
    fn read(&self, tenant: &str) -> Result<Versions, VaultError> {
        if self.is_shredded(tenant) {
            return Err(VaultError::Shredded(tenant.to_string()));
        }
        let path = self.file(tenant);
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        let malformed = |reason: String| VaultError::Malformed {
            path: path.clone(),
            reason,
        };
        if len > MAX_FILE_LEN {
            return Err(malformed(format!("{len} bytes, more than {MAX_FILE_LEN}")));
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        parse(&text).map_err(malformed)
    }

    /// Appends version `versions.len() + 1` and syncs it to disk. The directory belongs to one
    /// process, whose keyring appends under its writer lock: no one else can have added it.
    fn append(&self, tenant: &str, version: u32, wrapped: &[u8]) -> Result<bool, VaultError> {
        let path = self.file(tenant);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        // One write of the whole line, so a crash leaves all of it or a line cut short.
        let line = format!("{version} {}\n", hex::encode(wrapped));
        f.write_all(line.as_bytes()).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        self.sync_dir();
        Ok(true)
    }

    fn retire(&self, tenant: &str, version: u32) -> Result<(), VaultError> {
        let mut versions = self.read(tenant)?;
        if let Some(slot) = versions.get_mut(version as usize - 1) {
            *slot = None;
        }
        self.rewrite(tenant, &versions)
    }

    fn place(&self, tenant: &str) -> PathBuf {
        self.file(tenant)
    }

    /// Marks the tenant shredded, before anything is destroyed: from then on nothing is read
    /// or created for it, in this process or after a restart.
    fn mark_shredded(&self, tenant: &str) -> Result<(), VaultError> {
        let tomb = self.tombstone(tenant);
        std::fs::write(&tomb, b"").map_err(io(&tomb))?;
        self.sync_dir();
        Ok(())
    }

    /// Overwrites and removes the tenant's keyring file.
    fn destroy(&self, tenant: &str) -> Result<(), VaultError> {
        let path = self.file(tenant);
        overwrite(&path)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        self.sync_dir();
        Ok(())
    }
}

fn overwrite(path: &Path) -> Result<(), VaultError> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.write_all(&vec![0u8; meta.len() as usize])
                .map_err(io(path))?;
            f.sync_all().map_err(io(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

fn parse(text: &str) -> Result<Versions, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let (v, rest) = line
            .split_once(' ')
            .ok_or_else(|| format!("line {} has no key", i + 1))?;
        let version: usize = v
            .parse()
            .map_err(|_| format!("line {} does not start with a version", i + 1))?;
        if version != i + 1 {
            return Err(format!("line {} holds version {version}", i + 1));
        }
        let rest = rest.trim();
        if rest == "retired" {
            out.push(None);
            continue;
        }
        if rest.len() > 2 * MAX_WRAPPED_LEN || rest.len() % 2 != 0 {
            return Err(format!("version {version}'s key has a bad length"));
        }
        let wrapped =
            hex::decode(rest).map_err(|_| format!("version {version}'s key is not hex"))?;
        out.push(Some(wrapped));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_gaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = RingDir::open(dir.path()).unwrap();
        ring.append("acme", 1, &[1; 60]).unwrap();
        ring.append("acme", 2, &[2; 200]).unwrap();
        let mut v = ring.read("acme").unwrap();
        assert_eq!(v, vec![Some(vec![1; 60]), Some(vec![2; 200])]);
        v[0] = None;
        ring.retire("acme", 1).unwrap();
        assert_eq!(ring.read("acme").unwrap(), v);
        assert_eq!(ring.tenants().unwrap(), vec!["acme".to_string()]);

        for bad in ["2 00\n", "1 0g\n", "1\n", "1 000\n", "x 00\n"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("1 {}\n", "00".repeat(MAX_WRAPPED_LEN + 1));
        assert!(parse(&long).is_err());
    }

    #[test]
    fn a_shredded_tenant_reads_as_shredded_and_its_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ring = RingDir::open(dir.path()).unwrap();
        ring.append("acme", 1, &[1; 60]).unwrap();
        ring.mark_shredded("acme").unwrap();
        ring.destroy("acme").unwrap();
        assert!(matches!(ring.read("acme"), Err(VaultError::Shredded(_))));
        assert!(!ring.file("acme").exists());
        assert!(ring.tenants().unwrap().is_empty());
    }
}
