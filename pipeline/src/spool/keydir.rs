//! Where spool keys live, and how they are destroyed.
//!
//! One 32-byte key per epoch, one file per key. By default the directory is on a RAM-backed
//! filesystem (`/dev/shm`): the keys survive a crash of the Quire process, so a restart can
//! drain the spool, but never touch the disk that holds the spool records. Destroying a key
//! overwrites and unlinks its file, which on tmpfs really frees the only copy. See
//! docs/SECURITY.md, "Spool and crypto erasure".

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use quire_codecs::sealed::SecretKey;
use zeroize::Zeroizing;

use super::SpoolError;

/// The directory of spool keys.
#[derive(Debug)]
pub struct KeyDir {
    dir: PathBuf,
    durable: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |e| SpoolError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

impl KeyDir {
    /// Opens (creating, owner-only) the key directory. `durable` fsyncs each new key, needed
    /// only when the directory is on persistent storage.
    ///
    /// The directory must be this process's own: not a symbolic link (which could point where
    /// another user reads), owned by the user the server runs as, and closed to group and
    /// others. A predictable name in a world-writable place such as `/dev/shm` can be taken
    /// first by another user; these checks make that a refusal to start, never a leak.
    pub fn open(dir: &Path, durable: bool) -> Result<KeyDir, SpoolError> {
        refuse_symlink(dir)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        vet(dir)?;
        Ok(KeyDir {
            dir: dir.to_path_buf(),
            durable,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("{epoch:016x}.key"))
    }

    /// Draws and stores the key of a new epoch.
    pub fn create(&self, epoch: u64) -> Result<SecretKey, SpoolError> {
        let key = SecretKey::generate();
        let path = self.file(epoch);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(key.expose()).map_err(io(&path))?;
        if self.durable {
            f.sync_all().map_err(io(&path))?;
            fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(key)
    }

    /// The key of `epoch`, if it still exists.
    pub fn load(&self, epoch: u64) -> Result<Option<SecretKey>, SpoolError> {
        let path = self.file(epoch);
        match fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    SpoolError::Corrupt(format!("{} is not 32 bytes", path.display()))
                })?;
                Ok(Some(SecretKey::from_bytes(arr)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Destroys the key of `epoch`: overwritten with zeros, then unlinked.
    pub fn destroy(&self, epoch: u64) -> Result<(), SpoolError> {
        let path = self.file(epoch);
        match fs::OpenOptions::new().write(true).open(&path) {
            Ok(mut f) => {
                f.write_all(&[0u8; 32]).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&path)(e)),
        }
        fs::remove_file(&path).map_err(io(&path))?;
        if self.durable {
            fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(())
    }

    /// The epochs whose keys exist.
    pub fn epochs(&self) -> Result<Vec<u64>, SpoolError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".key")) else {
                continue;
            };
            if let Ok(e) = u64::from_str_radix(stem, 16) {
                out.push(e);
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// Whether an existing key directory is this process's own, as [`KeyDir::open`] requires:
/// not a symbolic link, owned by this process's user, closed to group and others.
pub fn vet(dir: &Path) -> Result<(), SpoolError> {
    use std::os::unix::fs::MetadataExt;
    refuse_symlink(dir)?;
    let meta = fs::symlink_metadata(dir).map_err(io(dir))?;
    let me = process_uid().map_err(io(Path::new("/proc/self")))?;
    match ownership_problem(meta.uid(), me, meta.permissions().mode()) {
        Some(why) => Err(SpoolError::Insecure {
            path: dir.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

fn refuse_symlink(dir: &Path) -> Result<(), SpoolError> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(SpoolError::Insecure {
            path: dir.to_path_buf(),
            why: "is a symbolic link; name the real directory".into(),
        }),
        _ => Ok(()),
    }
}

/// The user this process runs as (the owner of its `/proc/self`), without `unsafe`.
fn process_uid() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid())
}

/// What is wrong with a key directory owned by `owner` with `mode`, for a process of `me`.
pub fn ownership_problem(owner: u32, me: u32, mode: u32) -> Option<String> {
    if owner != me {
        Some(format!(
            "is owned by uid {owner}, not by the server's user (uid {me}): another user may \
             have made it; remove it or name a directory of the server's own ([spool] key_dir, \
             e.g. systemd's RuntimeDirectory)"
        ))
    } else if mode & 0o077 != 0 {
        Some(format!(
            "is open to group or others (mode {:o}); chmod 700 it",
            mode & 0o777
        ))
    } else {
        None
    }
}

/// The default key directory for a data directory, in RAM (never the spool's disk) and named
/// after the data directory so two servers never share keys: under systemd's
/// `RuntimeDirectory` (`$RUNTIME_DIRECTORY`) or the user's runtime directory
/// (`$XDG_RUNTIME_DIR`) when set, both private to the server's user; else on `/dev/shm`
/// (checked by [`KeyDir::open`]); else beside the data.
pub fn default_key_dir(data_dir: &Path) -> PathBuf {
    default_key_dir_from(data_dir, |var| std::env::var_os(var))
}

/// [`default_key_dir`] with the environment read through `env`.
pub fn default_key_dir_from(
    data_dir: &Path,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let canonical = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let tag = hex::encode(&crate::hash::sha256(canonical.as_os_str().as_encoded_bytes())[..8]);
    for var in ["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"] {
        if let Some(base) = env(var).map(PathBuf::from) {
            // systemd may list several directories, separated by colons: the first is ours.
            let first = base
                .to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
                .unwrap_or(base);
            if first.is_absolute() && first.is_dir() {
                return first.join(format!("quire-spool-keys-{tag}"));
            }
        }
    }
    if shm.is_dir() {
        use std::os::unix::fs::MetadataExt;
        let uid = fs::metadata(data_dir).map(|m| m.uid()).unwrap_or(0);
        shm.join(format!("quire-{uid}-{tag}"))
    } else {
        data_dir.join("spool-keys")
    }
}

/// Whether `dir` is on a RAM-backed filesystem (tmpfs), judged from /proc/self/mounts.
pub fn is_ram_backed(dir: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut best: Option<(usize, bool)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_), Some(point), Some(kind)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if dir.starts_with(point) && best.is_none_or(|(len, _)| point.len() > len) {
            best = Some((point.len(), matches!(kind, "tmpfs" | "ramfs")));
        }
    }
    best.is_some_and(|(_, ram)| ram)
}
