//! Backups of what a single node keeps outside the object store: the embedded metadata store,
//! the keyring files (keys already wrapped by the master key, KMS or HSM) and the audit log,
//! written to the default object store while the server runs, and restored into a new data
//! directory.
//!
//! `backups/<id>/` holds `meta.redb` and `audit.log` sealed (AES-256-GCM, a fresh data key
//! per part wrapped under a vault key named `-backup`, which no tenant can have:
//! `quire_codecs::sealed::seal_part`), the keyring files as they are
//! (`vault/<path>`), and last `index.json`, naming every part with its size and SHA-256: a
//! backup without it is incomplete and ignored. The master key file is never included: keep
//! it apart, as the README says; with a KMS or HSM the backend holds the root key.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use quire_codecs::sealed;
use quire_pipeline::{Pipeline, PipelineError};
use quire_storage::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where backups are listed in the default store.
pub const PREFIX: &str = "backups";
/// The vault name of the key backups are sealed under: `-` cannot begin a tenant id.
pub(crate) const BACKUP_KEY_OWNER: &str = "-backup";
/// The parts sealed, by name, and the files of the data directory they come from.
const SEALED: [&str; 2] = ["meta.redb", "audit.log"];

/// What a backup holds: `backups/<id>/index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupIndex {
    pub v: u32,
    pub id: String,
    pub created_unix_ms: u64,
    pub parts: Vec<Part>,
}

/// One object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The path under the data directory it restores to.
    pub name: String,
    pub sealed: bool,
    /// Size and SHA-256 of the object as stored.
    pub size: u64,
    pub sha256: String,
}

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn object(id: &str, name: &str) -> String {
    format!("{PREFIX}/{id}/{name}")
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a backup of the node at `data_dir` (its metadata store `meta`) to the default
/// store and every `[backup] replicas` store, then keeps the newest `keep` complete backups
/// in each (0: all). Returns its index.
pub(crate) async fn create(
    pipeline: &Pipeline,
    meta: &dyn crate::meta::MetaStore,
    data_dir: &Path,
    keep: u32,
) -> Result<BackupIndex, BackupError> {
    let now_ms = crate::signing::now_unix_ms();
    let id = format!("{now_ms:013}");
    let snapshot = data_dir.join(format!(".backup-{id}.redb"));
    let _ = std::fs::remove_file(&snapshot); // left by a crash mid-backup
    meta.snapshot(&snapshot)?;
    let gathered = gather_parts(pipeline, data_dir, &snapshot, &id).await;
    let _ = std::fs::remove_file(&snapshot);
    let gathered = gathered?;
    let index = BackupIndex {
        v: 1,
        id: id.clone(),
        created_unix_ms: now_ms,
        parts: gathered.iter().map(|(part, _)| part.clone()).collect(),
    };
    let json = Bytes::from(serde_json::to_vec_pretty(&index).expect("an index serialises"));
    for store in pipeline.copies_for(BACKUP_KEY_OWNER) {
        for (part, bytes) in &gathered {
            store
                .put_new(&object(&id, &part.name), bytes.clone())
                .await?;
        }
        // The index last: a backup without one is incomplete, and ignored.
        store
            .put_new(&object(&id, "index.json"), json.clone())
            .await?;
        prune(store, keep).await?;
    }
    Ok(index)
}

/// The sealed parts and the keyring files of backup `id`, with what the index says of each.
async fn gather_parts(
    pipeline: &Pipeline,
    data_dir: &Path,
    snapshot: &Path,
    id: &str,
) -> Result<Vec<(Part, Bytes)>, BackupError> {
    let mut parts = Vec::new();
    // Sealed first: sealing creates the backup key, whose wrapped copy the keyring files
    // below then include.
    let (kek_ref, kek) = pipeline.current_key(BACKUP_KEY_OWNER).await?;
    let audit_log = data_dir.join("audit.log");
    for (name, path) in [(SEALED[0], snapshot), (SEALED[1], audit_log.as_path())] {
        let Some(plain) = read_whole_lines(path)? else {
            continue;
        };
        let bytes = sealed::seal_part(&kek, &kek_ref, &object(id, name), &plain);
        parts.push(part(name, true, bytes.into()));
    }
    drop(kek);
    for (rel, path) in keyring_files(&data_dir.join("vault"))? {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        parts.push(part(&format!("vault/{rel}"), false, bytes.into()));
    }
    Ok(parts)
}

/// A file's bytes (for the audit log, which is appended to meanwhile, up to its last
/// complete line); `None` if there is none.
fn read_whole_lines(path: &Path) -> Result<Option<Vec<u8>>, BackupError> {
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    if path.extension().is_some_and(|e| e == "log") {
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(end);
    }
    Ok(Some(bytes))
}

fn part(name: &str, sealed: bool, bytes: Bytes) -> (Part, Bytes) {
    let part = Part {
        name: name.to_string(),
        sealed,
        size: bytes.len() as u64,
        sha256: digest(&bytes),
    };
    (part, bytes)
}

/// The keyring files under `vault_dir` (`<kind>/<tenant>.kek`, `.shredded`), by path
/// relative to it; never the master key.
fn keyring_files(vault_dir: &Path) -> Result<Vec<(String, PathBuf)>, BackupError> {
    let mut out = Vec::new();
    let Ok(kinds) = std::fs::read_dir(vault_dir) else {
        return Ok(out);
    };
    for kind in kinds {
        let kind = kind.map_err(io(vault_dir))?.path();
        if !kind.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&kind).map_err(io(&kind))? {
            let f = f.map_err(io(&kind))?.path();
            let ring = f.extension().is_some_and(|e| e == "kek" || e == "shredded");
            if ring && f.is_file() {
                let rel = f
                    .strip_prefix(vault_dir)
                    .expect("under the vault directory");
                out.push((rel.to_string_lossy().into_owned(), f));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The complete backups in `store`, oldest first.
pub async fn list(store: &Store) -> Result<Vec<String>, BackupError> {
    let mut ids: Vec<String> = store
        .list(PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| {
            let rest = o.key.strip_prefix(&format!("{PREFIX}/"))?;
            let (id, name) = rest.split_once('/')?;
            (name == "index.json").then(|| id.to_string())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Deletes all but the newest `keep` complete backups (0: keeps all).
async fn prune(store: &Store, keep: u32) -> Result<(), BackupError> {
    let ids = list(store).await?;
    if keep == 0 || ids.len() <= keep as usize {
        return Ok(());
    }
    for id in &ids[..ids.len() - keep as usize] {
        // The index goes first: a backup half deleted is an incomplete one, ignored.
        store.delete(&object(id, "index.json")).await?;
        for o in store.list(&format!("{PREFIX}/{id}")).await? {
            store.delete(&o.key).await?;
        }
    }
    Ok(())
}

/// Makes a backup every `[backup] every`, if set, for as long as the server's state lives;
/// a failure is logged and tried again at the next interval.
pub(crate) fn schedule(state: &std::sync::Arc<crate::edge::State>) {
    let Some(every) = state.backup.every else {
        return;
    };
    let state = std::sync::Arc::downgrade(state);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(state) = state.upgrade() else {
                return;
            };
            let (meta, dir, keep) = (state.meta.as_ref(), &state.data_dir, state.backup.keep);
            match create(&state.pipeline, meta, dir, keep).await {
                Ok(b) => tracing::info!(id = %b.id, parts = b.parts.len(), "backup written"),
                Err(e) => {
                    tracing::error!(error = %e, "scheduled backup failed; trying again at the next interval")
                }
            }
        }
    });
}

mod restore;
pub use restore::{available, restore, Restored};
