//! `[tenants.*]`: where each tenant's objects go (its store and replicas, checked against
//! its residency), how long they are kept, and who time-stamps its commits.

use std::path::Path;

use serde::Deserialize;

use super::{parse_store, ConfigError, StoreKind, StoreSection};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantSection {
    /// A `[stores.NAME]`; absent means the default `[store]`.
    store: Option<String>,
    /// Where the tenant's data must stay; its store must have the same residency.
    residency: Option<String>,
    /// The name earlier versions gave `residency` (read when `residency` is absent).
    region: Option<String>,
    /// How long committed jobs are kept: see [`crate::retention::Policy`].
    retention: Option<String>,
    /// `[stores.NAME]`s that keep a second copy of every object, in the same residency.
    #[serde(default)]
    replicas: Vec<String>,
    /// An RFC 3161 time-stamp authority (HTTP or HTTPS) that time-stamps every commit's
    /// signature.
    timestamp_url: Option<String>,
}

/// What `[tenants.*]` say, resolved against `[stores.*]`.
pub(super) struct Tenants {
    pub routes: Vec<(String, StoreKind)>,
    pub replicas: Vec<(String, Vec<StoreKind>)>,
    pub timestamp_urls: std::collections::HashMap<String, String>,
    pub retention: std::collections::HashMap<String, crate::retention::Policy>,
}

/// The named stores and the tenants routed to them, each checked against its region, the
/// tenants' replicas (checked the same way), and their retention policies.
pub(super) fn resolve_tenants(
    stores: std::collections::HashMap<String, StoreSection>,
    tenants: std::collections::HashMap<String, TenantSection>,
    data_dir: &Path,
    default_region: Option<String>,
    backup_replicas: &[String],
) -> Result<Tenants, ConfigError> {
    let mut named = std::collections::HashMap::new();
    for (name, section) in stores {
        let prefix = format!("stores.{name}");
        let (kind, region) = parse_store(section, &prefix, data_dir)?;
        let region = region.ok_or(ConfigError::Invalid {
            key: format!("{prefix}.residency"),
            reason: "every named store must say where it keeps data (e.g. residency = \"eu\")"
                .into(),
        })?;
        named.insert(name, (kind, region));
    }
    let mut routes = Vec::new();
    let mut replicas = Vec::new();
    let mut timestamp_urls = std::collections::HashMap::new();
    let mut retention = std::collections::HashMap::new();
    for (tenant, t) in tenants {
        if let Some(url) = &t.timestamp_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::Invalid {
                    key: format!("tenants.{tenant}.timestamp_url"),
                    reason: format!("{url:?} is not an http:// or https:// URL"),
                });
            }
            timestamp_urls.insert(tenant.clone(), url.clone());
        }
        let key = format!("tenants.{tenant}.store");
        quire_codecs::wire::validate_id("tenant", &tenant).map_err(|e| ConfigError::Invalid {
            key: format!("tenants.{tenant}"),
            reason: e.to_string(),
        })?;
        let (kind, store_region) = match &t.store {
            Some(name) => {
                let (kind, region) = named.get(name).ok_or(ConfigError::Invalid {
                    key: key.clone(),
                    reason: format!("no [stores.{name}] section"),
                })?;
                (Some(kind.clone()), Some(region.clone()))
            }
            None => (None, default_region.clone()),
        };
        match t.residency.as_ref().or(t.region.as_ref()) {
            Some(region) if store_region.as_deref() != Some(region.as_str()) => {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!(
                        "tenant {tenant} must stay in {region}, but its store's residency is {}",
                        store_region.as_deref().unwrap_or("not stated")
                    ),
                });
            }
            None if t.store.is_some() => {
                return Err(ConfigError::Invalid {
                    key: format!("tenants.{tenant}.residency"),
                    reason: "a tenant routed to a store of its own must state its residency".into(),
                });
            }
            _ => {}
        }
        if let Some(text) = &t.retention {
            let policy = text.parse().map_err(|reason| ConfigError::Invalid {
                key: format!("tenants.{tenant}.retention"),
                reason,
            })?;
            retention.insert(tenant.clone(), policy);
        }
        if !t.replicas.is_empty() {
            let Some(residency) = t.residency.as_ref().or(t.region.as_ref()) else {
                return Err(ConfigError::Invalid {
                    key: format!("tenants.{tenant}.residency"),
                    reason: "a tenant with replicas must state its residency, which every \
                             replica must keep"
                        .into(),
                });
            };
            let copies = Replicas {
                key: format!("tenants.{tenant}.replicas"),
                owner: format!("tenant {tenant}"),
                residency,
                own_store: t.store.as_ref(),
            }
            .resolve(&t.replicas, &named)?;
            replicas.push((tenant.clone(), copies));
        }
        if let Some(kind) = kind {
            routes.push((tenant, kind));
        }
    }
    if !backup_replicas.is_empty() {
        let residency = default_region.as_ref().ok_or(ConfigError::Invalid {
            key: "store.residency".into(),
            reason: "backups with replicas must know where the default store keeps data, which \
                     every replica must keep too"
                .into(),
        })?;
        let copies = Replicas {
            key: "backup.replicas".into(),
            owner: "the backups".into(),
            residency,
            own_store: None,
        }
        .resolve(backup_replicas, &named)?;
        replicas.push((crate::backup::BACKUP_KEY_OWNER.to_string(), copies));
    }
    Ok(Tenants {
        routes,
        replicas,
        timestamp_urls,
        retention,
    })
}

/// Whose `replicas` list is being resolved, and what its stores must keep to.
struct Replicas<'a> {
    /// The configuration key, for errors.
    key: String,
    /// Whose copies, for errors ("tenant acme", "the backups").
    owner: String,
    residency: &'a str,
    /// The `[stores.NAME]` the owner's primary copies go to, if not the default store.
    own_store: Option<&'a String>,
}

impl Replicas<'_> {
    /// Named stores, each other than the owner's primary, listed once, and keeping data
    /// where the owner must stay.
    fn resolve(
        &self,
        names: &[String],
        named: &std::collections::HashMap<String, (StoreKind, String)>,
    ) -> Result<Vec<StoreKind>, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        let mut copies = Vec::new();
        for name in names {
            let invalid = |reason: String| ConfigError::Invalid {
                key: self.key.clone(),
                reason,
            };
            if self.own_store == Some(name) {
                return Err(invalid(format!(
                    "{name} is the tenant's own store; a replica must be another store"
                )));
            }
            if !seen.insert(name) {
                return Err(invalid(format!("{name} is listed twice")));
            }
            let (kind, region) = named
                .get(name)
                .ok_or_else(|| invalid(format!("no [stores.{name}] section")))?;
            if region != self.residency {
                return Err(invalid(format!(
                    "{} must stay in {}, but replica {name} keeps data in {region}",
                    self.owner, self.residency
                )));
            }
            copies.push(kind.clone());
        }
        Ok(copies)
    }
}
