//! Server configuration: embedded defaults, overridden by a TOML file, overridden by flags.
//!
//! Every key is optional; an unknown key or a bad value is refused with a message that
//! names it, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quire_codecs::sealed::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use std::time::Duration;

use quire_pipeline::{AckMode, PipelineConfig, SpoolConfig};
use serde::Deserialize;

pub use backup::BackupConfig;
pub use meta::MetaConfig;
pub use observe::AuditConfig;
pub use tcp::TcpListen;
use tenants::{resolve_tenants, Tenants};
pub use tls::TlsFiles;
use tls::{resolve_tls, TlsSection};
pub use vault::{VaultConfig, VaultOpenError};

/// Where `serve` listens and `push` connects when told nothing else.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4433";
/// Where `serve` keeps its state when told nothing else.
pub const DEFAULT_DATA_DIR: &str = "quire-data";

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    /// SIGTERM: how long requests running and the spool's deliveries get before the exit.
    drain_timeout_secs: Option<f64>,
    #[serde(default)]
    tls: TlsSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    pipeline: PipelineSection,
    #[serde(default)]
    dev: DevSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    spool: SpoolSection,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    vault: vault::VaultSection,
    #[serde(default)]
    metrics: observe::MetricsSection,
    #[serde(default)]
    audit: observe::AuditSection,
    #[serde(default)]
    backup: backup::BackupSection,
    #[serde(default)]
    tcp: tcp::TcpSection,
    #[serde(default)]
    meta: meta::MetaSection,
    /// Named stores beyond the default one, for tenants routed elsewhere.
    #[serde(default)]
    stores: std::collections::HashMap<String, StoreSection>,
    /// Per-tenant routing and residency.
    #[serde(default)]
    tenants: std::collections::HashMap<String, tenants::TenantSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    /// How often the expiry sweeper looks for jobs to delete.
    sweep_interval_secs: Option<f64>,
    /// How long an uncommitted job may wait for its commit before its pages are collected.
    uncommitted_ttl_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    device_pages_per_sec: Option<f64>,
    device_bytes_per_sec: Option<f64>,
    tenant_pages_per_sec: Option<f64>,
    tenant_bytes_per_sec: Option<f64>,
    device_concurrent_jobs: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    kind: Option<String>,
    path: Option<PathBuf>,
    /// A local store's syncs: `batched` (default) or `each`.
    sync: Option<String>,
    /// How a local store writes new objects: `direct` (default) or `cached`.
    writes: Option<String>,
    endpoint: Option<String>,
    /// The store API's region (S3's `eu-central-1`).
    region: Option<String>,
    /// Where the store keeps data, as tenants' residency names it (`eu`). Earlier versions
    /// used `region` for both; it is still read as the residency when this is absent.
    residency: Option<String>,
    bucket: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    secret_access_key_env: Option<String>,
    account: Option<String>,
    access_key: Option<String>,
    access_key_file: Option<PathBuf>,
    access_key_env: Option<String>,
    container: Option<String>,
}

/// One of a local store's two-way settings (`[store] sync`, `writes`): the first choice when
/// absent; naming the default is allowed for any store, the other choice only for a local one.
fn local_choice<T: Copy>(
    (prefix, field, what): (&str, &str, &str),
    value: Option<&str>,
    local: bool,
    [(default_name, default), (other_name, other)]: [(&str, T); 2],
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v == default_name => Ok(default),
        Some(v) if v == other_name && local => Ok(other),
        Some(v) => Err(ConfigError::Invalid {
            key: format!("{prefix}.{field}"),
            reason: match local {
                true => format!("{v:?} is not \"{default_name}\" or \"{other_name}\""),
                false => format!("only a local store has {what} to choose"),
            },
        }),
    }
}

/// Parses one store section; `prefix` names it in errors (`store`, `stores.eu`).
fn parse_store(
    st: StoreSection,
    prefix: &str,
    data_dir: &Path,
) -> Result<(StoreKind, Option<String>), ConfigError> {
    let need = |field: &str, v: Option<String>| {
        v.filter(|x| !x.is_empty()).ok_or(ConfigError::Invalid {
            key: format!("{prefix}.{field}"),
            reason: "required for this store kind".into(),
        })
    };
    let kind = st.kind.as_deref().unwrap_or("local");
    let local = kind == "local";
    let sync = local_choice(
        (prefix, "sync", "syncs"),
        st.sync.as_deref(),
        local,
        [
            ("batched", quire_storage::LocalSync::Batched),
            ("each", quire_storage::LocalSync::Each),
        ],
    )?;
    let writes = local_choice(
        (prefix, "writes", "writes"),
        st.writes.as_deref(),
        local,
        [
            ("direct", quire_storage::LocalWrites::Direct),
            ("cached", quire_storage::LocalWrites::Cached),
        ],
    )?;
    let kind = match kind {
        "local" => StoreKind::Local {
            path: st.path.unwrap_or_else(|| data_dir.join("store")),
            sync,
            writes,
        },
        "s3" => StoreKind::S3(quire_storage::S3Options {
            endpoint: need("endpoint", st.endpoint)?,
            region: need("region", st.region.clone())?,
            bucket: need("bucket", st.bucket)?,
            access_key_id: need("access_key_id", st.access_key_id)?,
            secret_access_key: secret::resolve(
                &format!("{prefix}.secret_access_key"),
                secret::SecretSource {
                    inline: st.secret_access_key,
                    file: st.secret_access_key_file,
                    env: st.secret_access_key_env,
                },
            )?,
        }),
        "azure" => StoreKind::Azure(quire_storage::AzureOptions {
            endpoint: need("endpoint", st.endpoint)?,
            account: need("account", st.account)?,
            access_key: secret::resolve(
                &format!("{prefix}.access_key"),
                secret::SecretSource {
                    inline: st.access_key,
                    file: st.access_key_file,
                    env: st.access_key_env,
                },
            )?,
            container: need("container", st.container)?,
        }),
        "memory" => StoreKind::Memory,
        other => {
            return Err(ConfigError::Invalid {
                key: format!("{prefix}.kind"),
                reason: format!(
                    "{other:?} is not a known store (expected local, s3, azure, or memory for \
                     measurements)"
                ),
            })
        }
    };
    Ok((kind, st.residency.or(st.region)))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSection {
    chunk_size: Option<u32>,
    single_put_limit: Option<u64>,
    seal_window: Option<usize>,
    max_page_size: Option<u64>,
    max_streams_per_connection: Option<u32>,
    max_active_pages: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolSection {
    ack: Option<String>,
    capacity: Option<u64>,
    busy_wait_secs: Option<f64>,
    ack_timeout_secs: Option<f64>,
    key_dir: Option<PathBuf>,
    epoch_records: Option<u64>,
    epoch_age_secs: Option<f64>,
    upload_concurrency: Option<usize>,
    memory: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevSection {
    bootstrap: Option<bool>,
    tenant: Option<String>,
}

/// Which object store holds sealed objects.
#[derive(Debug, Clone)]
pub enum StoreKind {
    /// A directory on this machine, and how its writes are made and synced.
    Local {
        path: PathBuf,
        sync: quire_storage::LocalSync,
        writes: quire_storage::LocalWrites,
    },
    /// An S3-compatible service.
    S3(quire_storage::S3Options),
    /// An Azure Blob container.
    Azure(quire_storage::AzureOptions),
    /// The server's memory: for measuring the server without a store's costs (everything is
    /// gone when it stops).
    Memory,
}

impl StoreKind {
    /// The store this names, ready to use.
    pub fn open(&self) -> Result<quire_storage::Store, quire_storage::StoreError> {
        match self {
            StoreKind::Local { path, sync, writes } => {
                quire_storage::Store::local_with(path, *sync, *writes)
            }
            StoreKind::S3(o) => quire_storage::Store::s3(o),
            StoreKind::Azure(o) => quire_storage::Store::azure(o),
            StoreKind::Memory => Ok(quire_storage::Store::memory()),
        }
    }
}

impl PartialEq for StoreKind {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StoreKind::Local { path: a, .. }, StoreKind::Local { path: b, .. }) => a == b,
            (StoreKind::Memory, StoreKind::Memory) => true,
            _ => false,
        }
    }
}

/// The resolved server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Certificate chain, key and trust anchor in PEM; `None` means generate (once) and keep a
    /// development pair.
    pub tls: Option<TlsFiles>,
    pub store: StoreKind,
    pub pipeline: PipelineConfig,
    pub max_streams_per_connection: u32,
    /// Create a development tenant, device and admin credential on start.
    pub dev_bootstrap: bool,
    pub dev_tenant: String,
    /// Per-device and per-tenant limits (0 = unlimited).
    pub limits: crate::limits::LimitConfig,
    /// Tenants whose objects go to a store other than the default, in their region.
    pub routes: Vec<(String, StoreKind)>,
    /// Tenants whose objects are copied to further stores, in their region.
    pub replicas: Vec<(String, Vec<StoreKind>)>,
    /// Tenants whose commits are time-stamped, and by which authority (URL).
    pub timestamp_urls: std::collections::HashMap<String, String>,
    pub spool: quire_pipeline::SpoolConfig,
    /// Where spool keys live; `None` picks RAM (`/dev/shm`) when the machine has it.
    pub spool_key_dir: Option<PathBuf>,
    /// Retention policy per tenant; tenants not listed keep their jobs.
    pub retention: std::collections::HashMap<String, crate::retention::Policy>,
    /// How often the expiry sweeper runs.
    pub sweep_interval: Duration,
    /// An uncommitted job older than this is aborted by the sweeper.
    pub uncommitted_ttl: Duration,
    /// On SIGTERM, how long running requests and spool deliveries get (see `Server::drain`).
    pub drain_timeout: Duration,
    /// Which key service holds the tenants' keys.
    pub vault: VaultConfig,
    /// Where the operator's HTTP listener (metrics, health) binds; `None`: not at all.
    pub metrics_listen: Option<SocketAddr>,
    /// When audit chains are checkpointed.
    pub audit: AuditConfig,
    /// Scheduled backups.
    pub backup: BackupConfig,
    /// Where QUIC over TLS over TCP is served, for networks that drop UDP.
    pub tcp: TcpListen,
    /// Which database keeps the metadata.
    pub meta: MetaConfig,
    /// SHA-256 of the configuration file the server was started with (audited at start).
    pub config_sha256: Option<String>,
}

impl ServerConfig {
    /// Where the spool's keys live: `[spool] key_dir`, else the default for the data
    /// directory (see `quire_pipeline::spool::keydir::default_key_dir`).
    pub fn key_dir(&self) -> PathBuf {
        self.spool_key_dir
            .clone()
            .unwrap_or_else(|| quire_pipeline::spool::keydir::default_key_dir(&self.data_dir))
    }

    /// Resolves the configuration from an optional file and command-line overrides.
    pub fn load(
        file: Option<&Path>,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
    ) -> Result<ServerConfig, ConfigError> {
        let (fc, digest) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                let fc = toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.into(),
                    message: e.to_string(),
                })?;
                (fc, Some(config_digest(&text)))
            }
            None => (FileConfig::default(), None),
        };
        let mut config = Self::resolve(fc, listen, data_dir, file.is_some())?;
        config.config_sha256 = digest;
        Ok(config)
    }

    /// Parses a configuration from TOML text (no overrides).
    pub fn from_toml(text: &str) -> Result<ServerConfig, ConfigError> {
        let fc = toml::from_str::<FileConfig>(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        Self::resolve(fc, None, None, true)
    }

    fn resolve(
        fc: FileConfig,
        listen: Option<SocketAddr>,
        data_dir: Option<PathBuf>,
        from_file: bool,
    ) -> Result<ServerConfig, ConfigError> {
        let listen = match (listen, fc.listen) {
            (Some(a), _) => a,
            (None, Some(s)) => s.parse().map_err(|e| ConfigError::Invalid {
                key: "listen".into(),
                reason: format!("{s:?} is not an address like 127.0.0.1:4433 ({e})"),
            })?,
            (None, None) => DEFAULT_LISTEN.parse().expect("default address parses"),
        };
        let data_dir = data_dir
            .or(fc.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let tls = resolve_tls(fc.tls)?;
        let (store, default_region) = parse_store(fc.store, "store", &data_dir)?;
        let Tenants {
            routes,
            replicas,
            timestamp_urls,
            retention,
        } = resolve_tenants(
            fc.stores,
            fc.tenants,
            &data_dir,
            default_region,
            &fc.backup.replicas,
        )?;
        let (pipeline, spool, max_streams_per_connection) =
            resolve_pipeline(&fc.pipeline, &fc.spool)?;
        let dev_tenant = fc.dev.tenant.unwrap_or_else(|| "dev".into());
        quire_codecs::wire::validate_id("tenant", &dev_tenant).map_err(|e| {
            ConfigError::Invalid {
                key: "dev.tenant".into(),
                reason: e.to_string(),
            }
        })?;
        let limits = resolve_limits(&fc.limits)?;
        let sweep_interval = seconds(
            "retention.sweep_interval_secs",
            fc.retention.sweep_interval_secs,
            Duration::from_secs(3600),
        )?;
        let uncommitted_ttl = seconds(
            "retention.uncommitted_ttl_secs",
            fc.retention.uncommitted_ttl_secs,
            Duration::from_secs(7 * 24 * 3600),
        )?;
        let drain_timeout = seconds(
            "drain_timeout_secs",
            fc.drain_timeout_secs,
            Duration::from_secs(30),
        )?;
        // A development server (the quickstart, or one that asks for development credentials)
        // may keep its master key in the data directory; a production one may not.
        let development = !from_file || fc.dev.bootstrap == Some(true);
        let vault = fc.vault.resolve(development)?;
        let metrics_listen = fc.metrics.resolve()?;
        let audit = fc.audit.resolve()?;
        let backup = fc.backup.resolve()?;
        let meta = fc.meta.resolve()?;
        if backup.every.is_some() && matches!(meta, meta::MetaConfig::Postgres(_)) {
            return Err(ConfigError::Invalid {
                key: "backup.every".into(),
                reason: "the metadata is in PostgreSQL: back it up with pg_dump or continuous \
                         archiving (docs/METADATA.md); [backup] copies the embedded store"
                    .into(),
            });
        }
        Ok(ServerConfig {
            backup,
            tcp: fc.tcp.resolve()?,
            meta,
            audit,
            config_sha256: None,
            metrics_listen,
            vault,
            drain_timeout,
            retention,
            sweep_interval,
            uncommitted_ttl,
            spool,
            spool_key_dir: fc.spool.key_dir,
            routes,
            replicas,
            timestamp_urls,
            limits,
            listen,
            data_dir,
            tls,
            store,
            pipeline,
            max_streams_per_connection,
            // Development credentials only for the quickstart (no configuration, loopback): a
            // configured or reachable server gets its first admin from `quire admin bootstrap`.
            dev_bootstrap: fc
                .dev
                .bootstrap
                .unwrap_or(!from_file && listen.ip().is_loopback()),
            dev_tenant,
        })
    }
}

/// `[pipeline]` and `[spool]`: the stages' settings and the spool's, and the streams one
/// connection may open.
fn resolve_pipeline(
    p: &PipelineSection,
    sp: &SpoolSection,
) -> Result<(PipelineConfig, SpoolConfig, u32), ConfigError> {
    let mut pipeline = PipelineConfig::default();
    if let Some(cs) = p.chunk_size {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
            return Err(ConfigError::Invalid {
                key: "pipeline.chunk_size".into(),
                reason: format!("{cs} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"),
            });
        }
        pipeline.chunk_size = cs;
    }
    if let Some(v) = p.single_put_limit {
        pipeline.single_put_limit = v;
    }
    if let Some(v) = p.seal_window {
        if v == 0 || v > 1024 {
            return Err(ConfigError::Invalid {
                key: "pipeline.seal_window".into(),
                reason: format!("{v} is outside 1..=1024"),
            });
        }
        pipeline.seal_window = v;
    }
    if let Some(v) = p.max_page_size {
        if v == 0 {
            return Err(ConfigError::Invalid {
                key: "pipeline.max_page_size".into(),
                reason: "must be at least 1".into(),
            });
        }
        pipeline.max_page_size = v;
    }
    match sp.ack.as_deref() {
        None | Some("stored") => pipeline.ack = AckMode::Stored,
        Some("spooled") => pipeline.ack = AckMode::Spooled,
        Some("replicated") => pipeline.ack = AckMode::Replicated,
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: "spool.ack".into(),
                reason: format!(
                    "{other:?} is not one of \"stored\", \"spooled\" or \"replicated\""
                ),
            })
        }
    }
    pipeline.ack_timeout = seconds(
        "spool.ack_timeout_secs",
        sp.ack_timeout_secs,
        pipeline.ack_timeout,
    )?;
    if let Some(v) = sp.upload_concurrency {
        if v == 0 || v > 1024 {
            return Err(ConfigError::Invalid {
                key: "spool.upload_concurrency".into(),
                reason: format!("{v} is outside 1..=1024"),
            });
        }
        pipeline.upload_concurrency = v;
    }
    let defaults = SpoolConfig::default();
    let spool = SpoolConfig {
        capacity: match sp.capacity {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    key: "spool.capacity".into(),
                    reason: "must be at least 1 byte".into(),
                })
            }
            Some(v) => v,
            None => defaults.capacity,
        },
        busy_wait: seconds(
            "spool.busy_wait_secs",
            sp.busy_wait_secs,
            defaults.busy_wait,
        )?,
        durable: pipeline.ack == AckMode::Spooled,
        epoch_records: match sp.epoch_records {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    key: "spool.epoch_records".into(),
                    reason: "must be at least 1".into(),
                })
            }
            Some(v) => v,
            None => defaults.epoch_records,
        },
        epoch_age: seconds(
            "spool.epoch_age_secs",
            sp.epoch_age_secs,
            defaults.epoch_age,
        )?,
        memory: sp.memory.unwrap_or(defaults.memory),
    };
    if let Some(v) = p.max_active_pages {
        if v == 0 || v > 65536 {
            return Err(ConfigError::Invalid {
                key: "pipeline.max_active_pages".into(),
                reason: format!("{v} is outside 1..=65536"),
            });
        }
        pipeline.max_active_pages = v;
    }
    let max_streams_per_connection = p.max_streams_per_connection.unwrap_or(64);
    if max_streams_per_connection == 0 || max_streams_per_connection > 4096 {
        return Err(ConfigError::Invalid {
            key: "pipeline.max_streams_per_connection".into(),
            reason: format!("{max_streams_per_connection} is outside 1..=4096"),
        });
    }
    Ok((pipeline, spool, max_streams_per_connection))
}

/// `[limits]`: rates (0 = unlimited) and jobs in progress per device.
fn resolve_limits(l: &LimitsSection) -> Result<crate::limits::LimitConfig, ConfigError> {
    let rate = |key: &'static str, v: Option<f64>| -> Result<f64, ConfigError> {
        match v {
            Some(x) if !(x.is_finite() && x >= 0.0) => Err(ConfigError::Invalid {
                key: key.into(),
                reason: format!("{x} is not a rate (a number >= 0; 0 means unlimited)"),
            }),
            Some(x) => Ok(x),
            None => Ok(0.0),
        }
    };
    Ok(crate::limits::LimitConfig {
        device_pages_per_sec: rate("limits.device_pages_per_sec", l.device_pages_per_sec)?,
        device_bytes_per_sec: rate("limits.device_bytes_per_sec", l.device_bytes_per_sec)?,
        tenant_pages_per_sec: rate("limits.tenant_pages_per_sec", l.tenant_pages_per_sec)?,
        tenant_bytes_per_sec: rate("limits.tenant_bytes_per_sec", l.tenant_bytes_per_sec)?,
        device_concurrent_jobs: l.device_concurrent_jobs.unwrap_or(0),
    })
}

/// A number of seconds > 0 from the config, or `default` when absent.
fn seconds(key: &str, v: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x > 0.0 && x < 1e10 => Ok(Duration::from_secs_f64(x)),
        Some(x) => Err(ConfigError::Invalid {
            key: key.into(),
            reason: format!("{x} is not a number of seconds > 0"),
        }),
    }
}

/// The SHA-256 of the configuration file's bytes, as the audit log's `server.start` records it.
fn config_digest(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

mod backup;
mod meta;
mod observe;
mod secret;
mod tcp;
mod tenants;
#[cfg(test)]
mod tests;
mod tls;
mod vault;
