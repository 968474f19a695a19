//! `[meta]`: where the metadata lives. The embedded redb file in the data directory (the
//! default: one node, nothing to run beside it), or PostgreSQL, which several nodes share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::secret::{self, SecretSource};
use super::ConfigError;
use crate::meta::{Meta, MetaError, MetaStore, PgMeta, PgTarget};

/// Connections one node holds to PostgreSQL unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetaSection {
    /// `"redb"` (default) or `"postgres"`.
    kind: Option<String>,
    /// PostgreSQL: a `postgres://` URL or a libpq `key=value` string, without the password.
    url: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    pool_size: Option<usize>,
    /// PostgreSQL across a network: the PEM file of the CA that issued its certificate.
    ca: Option<PathBuf>,
}

/// Which metadata store the server uses.
#[derive(Debug, Clone, Default)]
pub enum MetaConfig {
    /// `meta.redb` in the data directory.
    #[default]
    Redb,
    Postgres(PgTarget),
}

impl MetaSection {
    pub(super) fn resolve(self) -> Result<MetaConfig, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: format!("meta.{key}"),
            reason,
        };
        match self.kind.as_deref().unwrap_or("redb") {
            "redb" => {
                let stray = [
                    ("url", self.url.is_some()),
                    ("password_file", self.password_file.is_some()),
                    ("password_env", self.password_env.is_some()),
                    ("pool_size", self.pool_size.is_some()),
                    ("ca", self.ca.is_some()),
                ];
                if let Some((key, _)) = stray.iter().find(|(_, given)| *given) {
                    return Err(invalid(
                        key,
                        "only applies to kind = \"postgres\"; the embedded store needs nothing"
                            .into(),
                    ));
                }
                Ok(MetaConfig::Redb)
            }
            "postgres" => {
                let url = self.url.ok_or_else(|| {
                    invalid(
                        "url",
                        "required for kind = \"postgres\" (e.g. \
                         postgres://quire@127.0.0.1/quire or host=/run/postgresql dbname=quire)"
                            .into(),
                    )
                })?;
                let parsed: tokio_postgres::Config = url.parse().map_err(|e| {
                    invalid(
                        "url",
                        format!("not a PostgreSQL connection URL or string: {e}"),
                    )
                })?;
                if parsed.get_password().is_some() {
                    return Err(invalid(
                        "url",
                        "holds a password: give it as meta.password_file or meta.password_env, \
                         so that the configuration file holds no secret"
                            .into(),
                    ));
                }
                let password = match (self.password_file, self.password_env) {
                    (None, None) => None,
                    (file, env) => Some(secret::resolve(
                        "meta.password",
                        SecretSource {
                            inline: None,
                            file,
                            env,
                        },
                    )?),
                };
                let pool_size = self.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
                if !(1..=1000).contains(&pool_size) {
                    return Err(invalid(
                        "pool_size",
                        format!("{pool_size} is not in 1..=1000"),
                    ));
                }
                Ok(MetaConfig::Postgres(PgTarget {
                    url,
                    password,
                    pool_size,
                    ca: self.ca,
                }))
            }
            other => Err(invalid(
                "kind",
                format!("{other:?} is not a metadata store: \"redb\" or \"postgres\""),
            )),
        }
    }
}

impl MetaConfig {
    /// Opens the store (for redb, `meta.redb` under `data_dir`).
    pub fn open(&self, data_dir: &Path) -> Result<Arc<dyn MetaStore>, MetaError> {
        Ok(match self {
            MetaConfig::Redb => Arc::new(Meta::open(&Self::redb_path(data_dir))?),
            MetaConfig::Postgres(target) => {
                let embedded = Self::redb_path(data_dir);
                if embedded.exists() {
                    // Starting on an empty database would hide every job, device and key
                    // version recorded there (and the keyring files beside it).
                    return Err(MetaError::Db(format!(
                        "{} holds this data directory's metadata (the embedded store): \
                         moving it into PostgreSQL is not supported yet. Keep [meta] kind = \
                         \"redb\" for this data directory, or give the PostgreSQL node a new \
                         one",
                        embedded.display()
                    )));
                }
                Arc::new(PgMeta::open(target)?)
            }
        })
    }

    /// Whether the store exists already (a PostgreSQL database is taken to: it is made by
    /// its administrator, not by Quire).
    pub fn exists(&self, data_dir: &Path) -> bool {
        match self {
            MetaConfig::Redb => Self::redb_path(data_dir).exists(),
            MetaConfig::Postgres(_) => true,
        }
    }

    /// What to tell an operator about this metadata store with the rest of the configuration:
    /// with the file vault, wrapped tenant keys in a database outlive a shred in its backups;
    /// with `ack = "spooled"`, a node's acknowledged pages wait in its own spool if it dies.
    pub fn warnings(&self, vault_kind: &str, ack: quire_pipeline::AckMode) -> Vec<&'static str> {
        let MetaConfig::Postgres(_) = self else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if vault_kind == "file" {
            out.push(
                "the file vault with [meta] kind = \"postgres\": wrapped tenant keys are rows \
                 of the database, so a shred is final only once its backups are gone too; use a \
                 KMS or HSM ([vault] kind) for several nodes (see docs/SECURITY.md)",
            );
        }
        if ack == quire_pipeline::AckMode::Spooled {
            out.push(
                "ack = \"spooled\" with [meta] kind = \"postgres\": pages this node acknowledges \
                 wait in its own spool until stored, so if it dies they wait for it to come back \
                 (no other node can store them); use ack = \"stored\" with several nodes (see \
                 docs/DEPLOY.md)",
            );
        }
        out
    }

    fn redb_path(data_dir: &Path) -> PathBuf {
        data_dir.join("meta.redb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_pipeline::AckMode;

    #[test]
    fn a_shared_database_warns_of_what_a_node_keeps_to_itself() {
        let pg = MetaConfig::Postgres(PgTarget {
            url: "host=/run/postgresql".into(),
            password: None,
            pool_size: 1,
            ca: None,
        });
        assert!(MetaConfig::Redb
            .warnings("file", AckMode::Spooled)
            .is_empty());
        assert!(pg.warnings("aws-kms", AckMode::Stored).is_empty());
        let w = pg.warnings("file", AckMode::Spooled);
        assert_eq!(w.len(), 2);
        assert!(w[0].contains("shred is final only once its backups are gone"));
        assert!(w[1].contains("use ack = \"stored\" with several nodes"));
    }
}
