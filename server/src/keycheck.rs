//! Do the keys match the data? Checked before the server accepts a connection, and by
//! `quire admin vault check`.
//!
//! The metadata store records how many key versions each tenant has had and which jobs it
//! holds; the vault holds the keys. A tenant whose known versions, or whose stored jobs,
//! have no key in the vault would have every acknowledged document answered with an error,
//! and the first new push would create a fresh key that can never open the old data. So the
//! server refuses to start instead, saying what is missing.

use quire_pipeline::{KeyVault, VaultError};

use crate::meta::{MetaError, MetaStore};

/// One tenant's keys against its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeys {
    pub tenant: String,
    /// Key versions the metadata store knows of.
    pub recorded: u32,
    /// Key versions the vault holds.
    pub present: u32,
    /// Jobs whose objects have not been deleted.
    pub live_jobs: usize,
    /// The tenant was crypto-shredded: no keys, on purpose.
    pub shredded: bool,
}

impl TenantKeys {
    /// Key versions that must be present.
    pub fn needed(&self) -> u32 {
        if self.shredded {
            return 0;
        }
        self.recorded.max(u32::from(self.live_jobs > 0))
    }

    /// What is wrong, if anything, in words for the operator.
    pub fn problem(&self) -> Option<String> {
        (self.present < self.needed()).then(|| {
            format!(
                "tenant {}: the metadata records {} key version(s) and {} stored job(s), but the vault holds {} key version(s); restore its keyring file ({}.kek under vault/tenants/, or vault/<kind>/tenants/ for a KMS or HSM) and the master key or key service it was wrapped by from your backup; changing [vault] kind does not carry keys over",
                self.tenant, self.recorded, self.live_jobs, self.present, self.tenant
            )
        })
    }
}

/// A failure to read either side.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("{0}")]
    DataDir(String),
}

/// Compares every tenant's recorded keys and data with the vault.
pub fn check(meta: &dyn MetaStore, vault: &dyn KeyVault) -> Result<Vec<TenantKeys>, CheckError> {
    let mut out = Vec::new();
    for tenant in meta.tenants()? {
        let live_jobs = meta
            .jobs(&tenant)?
            .iter()
            .filter(|(_, row)| row.deleted_unix.is_none())
            .count();
        let (present, shredded) = match vault.versions(&tenant) {
            Ok(n) => (n, false),
            Err(VaultError::Shredded(_)) => (0, true),
            Err(e) => return Err(e.into()),
        };
        out.push(TenantKeys {
            recorded: meta.kek_versions(&tenant)?,
            tenant,
            present,
            live_jobs,
            shredded,
        });
    }
    Ok(out)
}

/// Runs [`check`]; if every tenant's keys are present, records what the vault holds (so a
/// later loss is noticed) and tells the vault which versions must exist. Otherwise returns
/// every problem found.
pub fn enforce(meta: &dyn MetaStore, vault: &dyn KeyVault) -> Result<(), Vec<String>> {
    let report = check(meta, vault).map_err(|e| vec![e.to_string()])?;
    let problems: Vec<String> = report.iter().filter_map(TenantKeys::problem).collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    // Page rows of tenants shredded by earlier versions, which kept them.
    for t in report.iter().filter(|t| t.shredded) {
        meta.forget_pages(&t.tenant)
            .map_err(|e| vec![e.to_string()])?;
    }
    for t in report.iter().filter(|t| !t.shredded) {
        meta.record_kek_versions(&t.tenant, t.present)
            .map_err(|e| vec![e.to_string()])?;
        vault.expect_versions(&t.tenant, t.needed().max(t.present));
    }
    Ok(())
}

/// What [`check_data_dir`] found, as the operator reads it.
#[derive(Debug, Clone)]
pub struct Report {
    /// One line per tenant, then the problems.
    pub text: String,
    pub ok: bool,
}

/// Opens a data directory's metadata store and vault (the server must be stopped) and
/// compares them. A vault that does not open at all (missing or wrong master key) is an
/// error saying so.
pub fn check_data_dir(config: &crate::config::ServerConfig) -> Result<Report, CheckError> {
    let data_dir = &config.data_dir;
    if !config.meta.exists(data_dir) {
        return Err(CheckError::DataDir(format!(
            "{} holds no metadata store: not a Quire data directory",
            data_dir.display()
        )));
    }
    let meta = config.meta.open(data_dir).map_err(|e| {
        CheckError::DataDir(format!(
            "{e} (is `quire serve` running on this data directory? stop it first)"
        ))
    })?;
    let vault = config
        .vault
        .open(data_dir, &config.store, meta.key_rings(config.vault.kind()))
        .map_err(|e| CheckError::DataDir(e.to_string()))?;
    let report = check(meta.as_ref(), &vault)?;
    let mut text = String::new();
    let mut ok = true;
    for t in &report {
        let state = match t.problem() {
            _ if t.shredded => "shredded".to_string(),
            Some(p) => {
                ok = false;
                format!("MISSING KEYS: {p}")
            }
            None => "ok".to_string(),
        };
        text.push_str(&format!(
            "tenant {}: {} key version(s) in the vault, {} recorded, {} stored job(s): {state}\n",
            t.tenant, t.present, t.recorded, t.live_jobs
        ));
    }
    Ok(Report { text, ok })
}
