//! Bringing a new node up from a backup: the keyring files first (so the configured vault
//! can open the backup key), then the sealed metadata store and audit log, each checked
//! against the backup's index before it is written.

use std::path::Path;

use quire_codecs::sealed::{self, KekRef};
use quire_pipeline::vault::KeyVault;
use sha2::{Digest, Sha256};

use super::{io, list, object, BackupError, BackupIndex, BACKUP_KEY_OWNER, SEALED};
use crate::config::ServerConfig;

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub id: String,
    pub created_unix_ms: u64,
    pub files: Vec<String>,
}

/// Restores backup `id` (the newest complete one if `None`) from the configured default
/// store into the configured data directory, which must not hold a node already.
pub async fn restore(config: &ServerConfig, id: Option<&str>) -> Result<Restored, BackupError> {
    let data_dir = &config.data_dir;
    if matches!(config.meta, crate::config::MetaConfig::Postgres(_)) {
        return Err(BackupError::Refused(
            "this configuration keeps the metadata in PostgreSQL: restore it with its own \
             tools (pg_restore, point-in-time recovery); `quire admin restore` fills an \
             embedded store"
                .into(),
        ));
    }
    let taken = data_dir.join("meta.redb");
    if taken.exists() {
        return Err(BackupError::Refused(format!(
            "{} exists: restore into a new, empty data directory (a node's data is never \
             overwritten)",
            taken.display()
        )));
    }
    // The default store first, then the backup replicas: the first that holds the backup
    // whole, every part as its index says, is restored from.
    let mut fetched = None;
    let mut failures = Vec::new();
    for store in backup_stores(config)? {
        match fetch(&store, id).await {
            Ok(f) => {
                fetched = Some(f);
                break;
            }
            Err(e) => failures.push(format!("{}: {e}", store.name())),
        }
    }
    let Some((index, parts)) = fetched else {
        return Err(BackupError::Refused(failures.join("; ")));
    };
    let id = index.id.clone();
    let mut files = Vec::new();
    for (part, bytes) in parts.iter().filter(|(p, _)| !p.sealed) {
        let rel = part
            .name
            .strip_prefix("vault/")
            .expect("checked when fetched");
        write_new(&data_dir.join("vault").join(rel), bytes)?;
        files.push(part.name.clone());
    }
    let vault = config
        .vault
        .open(data_dir, &config.store, None)
        .map_err(|e| BackupError::Refused(format!("opening the vault: {e}")))?;
    for (part, bytes) in parts.iter().filter(|(p, _)| p.sealed) {
        let key = object(&id, &part.name);
        let not_open = |e: &dyn std::fmt::Display| {
            BackupError::Refused(format!(
                "{key} does not open ({e}): is this node's vault (master key, KMS or HSM) the \
                 one the backup was made with?"
            ))
        };
        let kek_ref = KekRef {
            tenant: BACKUP_KEY_OWNER.into(),
            kek_id: quire_pipeline::vault::KEK_ID.into(),
            version: sealed::part_version(bytes).map_err(|e| not_open(&e))?,
        };
        let kek = vault.kek(&kek_ref).map_err(|e| not_open(&e))?;
        let plain = sealed::open_part(&kek, &kek_ref, &key, bytes).map_err(|e| not_open(&e))?;
        write_new(&data_dir.join(&part.name), &plain)?;
        files.push(part.name.clone());
    }
    Ok(Restored {
        id,
        created_unix_ms: index.created_unix_ms,
        files,
    })
}

/// Where the configuration keeps backups: the default store, then the backup replicas.
fn backup_stores(config: &ServerConfig) -> Result<Vec<quire_storage::Store>, BackupError> {
    let mut stores = vec![config.store.open()?];
    for (owner, kinds) in &config.replicas {
        if owner == BACKUP_KEY_OWNER {
            for kind in kinds {
                stores.push(kind.open()?);
            }
        }
    }
    Ok(stores)
}

/// Backup `id` (the newest complete one if `None`) as `store` holds it: its index and every
/// part, each checked against the index; nothing is written.
async fn fetch(
    store: &quire_storage::Store,
    id: Option<&str>,
) -> Result<(BackupIndex, Vec<(super::Part, bytes::Bytes)>), BackupError> {
    let ids = list(store).await?;
    let id = match id {
        Some(id) if ids.iter().any(|i| i == id) => id.to_string(),
        Some(id) => {
            return Err(BackupError::Refused(format!(
                "no complete backup {id} in the store (there are: {})",
                ids.join(", ")
            )))
        }
        None => ids
            .last()
            .cloned()
            .ok_or_else(|| BackupError::Refused("the store holds no complete backup".into()))?,
    };
    let index: BackupIndex = serde_json::from_slice(&store.get(&object(&id, "index.json")).await?)
        .map_err(|e| BackupError::Refused(format!("backup {id}: index.json: {e}")))?;
    if index.id != id {
        return Err(BackupError::Refused(format!(
            "backup {id}: its index names backup {}: the backup is damaged",
            index.id
        )));
    }
    let mut parts = Vec::new();
    for part in &index.parts {
        let known = if part.sealed {
            SEALED.contains(&part.name.as_str())
        } else {
            part.name.strip_prefix("vault/").is_some_and(safe)
        };
        if !known {
            return Err(BackupError::Refused(format!(
                "backup {id}: part {} is neither a sealed part nor a keyring file",
                part.name
            )));
        }
        let key = object(&id, &part.name);
        let bytes = store.get(&key).await?;
        if bytes.len() as u64 != part.size || hex::encode(Sha256::digest(&bytes)) != part.sha256 {
            return Err(BackupError::Refused(format!(
                "{key} is not what the backup's index says (size or SHA-256): the backup is \
                 damaged; restore an earlier one"
            )));
        }
        parts.push((part.clone(), bytes));
    }
    Ok((index, parts))
}

/// The complete backups in the configured default store, oldest first, with their indexes.
pub async fn available(config: &ServerConfig) -> Result<Vec<BackupIndex>, BackupError> {
    let store = config.store.open()?;
    let mut out = Vec::new();
    for id in list(&store).await? {
        let bytes = store.get(&object(&id, "index.json")).await?;
        out.push(
            serde_json::from_slice(&bytes)
                .map_err(|e| BackupError::Refused(format!("backup {id}: index.json: {e}")))?,
        );
    }
    Ok(out)
}

/// A relative path of plain names, which cannot leave the directory it is joined to.
fn safe(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Writes a file that must not exist yet, readable by its owner only.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_postgres_node_is_restored_with_postgres_tools() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "data_dir = \"{}\"\n[meta]\nkind = \"postgres\"\nurl = \"host=/tmp dbname=q\"\n",
            dir.path().display()
        );
        let config = ServerConfig::from_toml(&toml).unwrap();
        let e = restore(&config, None).await.unwrap_err().to_string();
        assert!(e.contains("PostgreSQL") && e.contains("pg_restore"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }

    #[test]
    fn keyring_paths_from_a_backup_stay_under_the_vault() {
        assert!(safe("file/acme.kek"));
        for bad in ["", "../master.key", "/etc/passwd", "file/../../x"] {
            assert!(!safe(bad), "{bad}");
        }
    }
}
