//! `[vault]`: which key service holds the tenants' root keys (see `quire-vault`).
//!
//! ```toml
//! [vault]
//! kind = "file"                    # or "aws-kms", "pkcs11"
//! master_key = "/etc/quire/master.key"
//!
//! # kind = "aws-kms": static credentials and an explicit endpoint, nothing discovered
//! endpoint = "https://kms.eu-central-1.amazonaws.com"
//! region = "eu-central-1"
//! access_key_id = "AKIA…"
//! secret_access_key_file = "/etc/quire/kms.secret"
//!
//! # kind = "pkcs11"
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token_label = "quire"
//! pin_file = "/etc/quire/hsm.pin"
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use quire_pipeline::vault::{
    AwsKms, AwsKmsOptions, Keyring, Pkcs11, Pkcs11Options, RingDir, RingStore, VaultError,
    DEFAULT_CACHE_BOUNDS,
};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::secret::{self, SecretSource};
use super::{ConfigError, StoreKind};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VaultSection {
    kind: Option<String>,
    master_key: Option<PathBuf>,
    allow_master_key_in_data_dir: Option<bool>,
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    secret_access_key_env: Option<String>,
    module: Option<PathBuf>,
    token_label: Option<String>,
    pin: Option<String>,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
}

/// The resolved `[vault]`.
#[derive(Debug, Clone)]
pub enum VaultConfig {
    /// A master key file; `None` means `<data_dir>/vault/master.key`.
    File {
        master_key: Option<PathBuf>,
        /// Accept a master key inside the data directory or beside the local store.
        allow_in_data_dir: bool,
    },
    AwsKms(AwsKmsOptions),
    Pkcs11(Pkcs11Options),
}

/// Why the vault could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultOpenError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("the master key {key} is {place}: one copy of that (a backup, a snapshot, a stolen disk) would hold both the data and the key that opens it. Keep the master key elsewhere and name it in [vault] master_key (moving the existing file is safe), or use a KMS or HSM ([vault] kind); for development only, set [vault] allow_master_key_in_data_dir = true")]
    MasterKeyBesideData { key: PathBuf, place: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

fn required(v: Option<String>, key: &str, kind: &str) -> Result<String, ConfigError> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(key, format!("required with kind = \"{kind}\"")))
}

impl VaultSection {
    /// Resolves the section. `development` (no config file, or `[dev] bootstrap = true`)
    /// allows the master key in the data directory unless the section says otherwise.
    pub(super) fn resolve(self, development: bool) -> Result<VaultConfig, ConfigError> {
        let kind = self.kind.clone().unwrap_or_else(|| "file".into());
        let stray = |keys: &[(&str, bool)]| -> Result<(), ConfigError> {
            match keys.iter().find(|(_, set)| *set) {
                Some((k, _)) => Err(invalid(
                    &format!("vault.{k}"),
                    format!("does not apply to kind = \"{kind}\""),
                )),
                None => Ok(()),
            }
        };
        let file_keys = [
            ("master_key", self.master_key.is_some()),
            (
                "allow_master_key_in_data_dir",
                self.allow_master_key_in_data_dir.is_some(),
            ),
        ];
        let kms_keys = [
            ("endpoint", self.endpoint.is_some()),
            ("region", self.region.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
        ];
        let hsm_keys = [
            ("module", self.module.is_some()),
            ("token_label", self.token_label.is_some()),
        ];
        match kind.as_str() {
            "file" => {
                stray(&kms_keys)?;
                stray(&hsm_keys)?;
                Ok(VaultConfig::File {
                    master_key: self.master_key,
                    allow_in_data_dir: self.allow_master_key_in_data_dir.unwrap_or(development),
                })
            }
            "aws-kms" => {
                stray(&file_keys)?;
                stray(&hsm_keys)?;
                let secret_access_key = secret::resolve(
                    "vault.secret_access_key",
                    SecretSource {
                        inline: self.secret_access_key,
                        file: self.secret_access_key_file,
                        env: self.secret_access_key_env,
                    },
                )?;
                let endpoint = required(self.endpoint, "vault.endpoint", &kind)?;
                if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                    return Err(invalid("vault.endpoint", "must be an http(s):// URL"));
                }
                Ok(VaultConfig::AwsKms(AwsKmsOptions {
                    endpoint,
                    region: required(self.region, "vault.region", &kind)?,
                    access_key_id: required(self.access_key_id, "vault.access_key_id", &kind)?,
                    secret_access_key: Zeroizing::new(secret_access_key),
                    session_token: None,
                }))
            }
            "pkcs11" => {
                stray(&file_keys)?;
                stray(&kms_keys)?;
                let pin = secret::resolve(
                    "vault.pin",
                    SecretSource {
                        inline: self.pin,
                        file: self.pin_file,
                        env: self.pin_env,
                    },
                )?;
                Ok(VaultConfig::Pkcs11(Pkcs11Options {
                    module: self.module.ok_or_else(|| {
                        invalid("vault.module", "required with kind = \"pkcs11\"")
                    })?,
                    token_label: required(self.token_label, "vault.token_label", &kind)?,
                    pin: Zeroizing::new(pin),
                }))
            }
            other => Err(invalid(
                "vault.kind",
                format!("{other:?} is not one of \"file\", \"aws-kms\", \"pkcs11\""),
            )),
        }
    }
}

impl VaultConfig {
    /// The backend's name.
    pub fn kind(&self) -> &'static str {
        match self {
            VaultConfig::File { .. } => "file",
            VaultConfig::AwsKms(_) => "aws-kms",
            VaultConfig::Pkcs11(_) => "pkcs11",
        }
    }

    /// Opens the keyring over the configured backend, its wrapped keys in `shared` (a
    /// database the nodes share) or else under `<data_dir>/vault`. A file master key inside
    /// the data directory, or on the file system of the local store, is refused unless
    /// allowed.
    pub fn open(
        &self,
        data_dir: &Path,
        store: &StoreKind,
        shared: Option<Box<dyn RingStore>>,
    ) -> Result<Keyring, VaultOpenError> {
        let vault_dir = data_dir.join("vault");
        let ring: Box<dyn RingStore> = match shared {
            Some(ring) => ring,
            None => Box::new(RingDir::open(&quire_pipeline::vault::ring_dir(
                &vault_dir,
                self.kind(),
            ))?),
        };
        let backend_error = |source| VaultError::Backend {
            backend: self.kind(),
            action: "start",
            tenant: "(none)".into(),
            source,
        };
        match self {
            VaultConfig::File { .. } => {
                let key = self.master_key_in_place(data_dir, store)?;
                Ok(Keyring::file_in(ring, &key)?)
            }
            VaultConfig::AwsKms(options) => {
                let kms = AwsKms::new(options.clone()).map_err(backend_error)?;
                Ok(Keyring::open_in(ring, Box::new(kms), DEFAULT_CACHE_BOUNDS)?)
            }
            VaultConfig::Pkcs11(options) => {
                let hsm = Pkcs11::open(options).map_err(backend_error)?;
                Ok(Keyring::open_in(ring, Box::new(hsm), DEFAULT_CACHE_BOUNDS)?)
            }
        }
    }
}

impl VaultConfig {
    /// The file vault's master key path (`[vault] master_key`, else `vault/master.key` in the
    /// data directory), refused beside the data unless allowed or given by `QUIRE_MASTER_KEY`.
    fn master_key_in_place(
        &self,
        data_dir: &Path,
        store: &StoreKind,
    ) -> Result<PathBuf, VaultOpenError> {
        let VaultConfig::File {
            master_key,
            allow_in_data_dir,
        } = self
        else {
            unreachable!("only the file vault has a master key")
        };
        let key = master_key
            .clone()
            .unwrap_or_else(|| data_dir.join("vault").join("master.key"));
        if !allow_in_data_dir && std::env::var_os("QUIRE_MASTER_KEY").is_none() {
            if let Some(place) = beside_data(&key, data_dir, local_store(store)) {
                return Err(VaultOpenError::MasterKeyBesideData { key, place });
            }
        }
        Ok(key)
    }

    /// Reaches the backend without touching the data directory (for `serve --check` before
    /// the first start): the master key's place, the KMS endpoint and credentials, the token
    /// and PIN.
    pub fn probe(&self, data_dir: &Path, store: &StoreKind) -> Result<String, String> {
        let backend_error = |e: quire_pipeline::vault::BackendError| e.to_string();
        match self {
            VaultConfig::File { .. } => {
                let key = self
                    .master_key_in_place(data_dir, store)
                    .map_err(|e| e.to_string())?;
                if std::env::var_os("QUIRE_MASTER_KEY").is_some() || key.exists() {
                    // Reads and vets it; never creates one (a sealed count of 1 forbids that).
                    quire_pipeline::vault::FileBackend::open(&key, 1).map_err(|e| e.to_string())?;
                    Ok(format!("file: master key {} is usable", key.display()))
                } else {
                    Ok(format!(
                        "file: master key {} will be generated on first start",
                        key.display()
                    ))
                }
            }
            VaultConfig::AwsKms(options) => {
                use quire_pipeline::vault::KeyBackend;
                let kms = AwsKms::new(options.clone()).map_err(backend_error)?;
                kms.probe().map_err(backend_error)?;
                Ok(format!(
                    "aws-kms: {} answers to Quire's credentials",
                    options.endpoint
                ))
            }
            VaultConfig::Pkcs11(options) => {
                use quire_pipeline::vault::KeyBackend;
                let hsm = Pkcs11::open(options).map_err(backend_error)?;
                hsm.probe().map_err(backend_error)?;
                Ok(format!(
                    "pkcs11: logged in to token {:?} of {}",
                    options.token_label,
                    options.module.display()
                ))
            }
        }
    }
}

/// Where `key` sits too close to the data, in words, or `None` if it is apart.
fn beside_data(key: &Path, data_dir: &Path, local_store: Option<&Path>) -> Option<String> {
    let inside = Some(format!("inside the data directory {}", data_dir.display()));
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if absolute(key).starts_with(absolute(data_dir)) {
        return inside;
    }
    // Through symbolic links too.
    let key_dir = existing_ancestor(key.parent().unwrap_or(Path::new(".")));
    if let (Ok(k), Ok(d)) = (key_dir.canonicalize(), data_dir.canonicalize()) {
        if k.starts_with(&d) {
            return inside;
        }
    }
    if let Some(path) = local_store {
        let store_root = existing_ancestor(path);
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&key_dir), std::fs::metadata(&store_root)) {
            if a.dev() == b.dev() {
                return Some(format!(
                    "on the same file system as the local store {}",
                    path.display()
                ));
            }
        }
    }
    None
}

fn local_store(store: &StoreKind) -> Option<&Path> {
    match store {
        StoreKind::Local { path, .. } => Some(path),
        _ => None,
    }
}

/// `path` or its nearest ancestor that exists (a data directory not yet created is judged
/// by where it will be).
fn existing_ancestor(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent.to_path_buf(),
            _ => return PathBuf::from("."),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::super::ServerConfig;
    use super::*;

    fn vault(toml: &str) -> Result<VaultConfig, ConfigError> {
        ServerConfig::from_toml(toml).map(|c| c.vault)
    }

    fn refused(toml: &str, key: &str) {
        match vault(toml) {
            Err(ConfigError::Invalid { key: k, .. }) if k == key => {}
            other => panic!("{toml:?}: expected {key} to be refused, got {other:?}"),
        }
    }

    #[test]
    fn each_kind_resolves_and_stray_keys_are_refused() {
        assert!(matches!(
            vault("").unwrap(),
            VaultConfig::File {
                master_key: None,
                allow_in_data_dir: false
            }
        ));
        assert!(matches!(
            vault("[dev]\nbootstrap = true\n").unwrap(),
            VaultConfig::File {
                allow_in_data_dir: true,
                ..
            }
        ));
        assert!(matches!(
            ServerConfig::load(None, None, None).unwrap().vault,
            VaultConfig::File {
                allow_in_data_dir: true,
                ..
            }
        ));
        let kms = vault("[vault]\nkind = \"aws-kms\"\nendpoint = \"https://kms.eu-central-1.amazonaws.com\"\nregion = \"eu-central-1\"\naccess_key_id = \"AK\"\nsecret_access_key_env = \"QUIRE_TEST_NO_SUCH_VARIABLE_SET\"\n");
        assert!(
            matches!(kms, Err(ConfigError::Invalid { ref key, .. }) if key == "vault.secret_access_key_env"),
            "{kms:?}"
        );
        let kms = vault("[vault]\nkind = \"aws-kms\"\nendpoint = \"https://kms.example\"\nregion = \"eu-central-1\"\naccess_key_id = \"AK\"\nsecret_access_key = \"s\"\n").unwrap();
        assert_eq!(kms.kind(), "aws-kms");
        assert!(
            !format!("{kms:?}").contains("\"s\""),
            "a secret in Debug output"
        );
        let hsm = vault("[vault]\nkind = \"pkcs11\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"quire\"\npin = \"1234\"\n").unwrap();
        assert_eq!(hsm.kind(), "pkcs11");
        assert!(
            !format!("{hsm:?}").contains("1234"),
            "the PIN in Debug output"
        );

        refused("[vault]\nkind = \"vault9\"\n", "vault.kind");
        refused("[vault]\nmodule = \"/x.so\"\n", "vault.module");
        refused(
            "[vault]\nkind = \"pkcs11\"\ntoken_label = \"q\"\npin = \"1\"\n",
            "vault.module",
        );
        refused(
            "[vault]\nkind = \"pkcs11\"\nmodule = \"/x.so\"\ntoken_label = \"q\"\n",
            "vault.pin",
        );
        refused(
            "[vault]\nkind = \"aws-kms\"\nmaster_key = \"/k\"\n",
            "vault.master_key",
        );
        refused(
            "[vault]\nkind = \"aws-kms\"\nendpoint = \"kms.example\"\nregion = \"r\"\naccess_key_id = \"a\"\nsecret_access_key = \"s\"\n",
            "vault.endpoint",
        );
    }

    #[test]
    fn a_master_key_beside_the_data_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("quire-data");
        let remote = None;
        let inside = beside_data(&data.join("vault/master.key"), &data, remote).unwrap();
        assert!(inside.contains("inside the data directory"), "{inside}");
        // Through a symbolic link into the data directory too.
        std::fs::create_dir_all(data.join("vault")).unwrap();
        std::os::unix::fs::symlink(data.join("vault"), dir.path().join("keys")).unwrap();
        assert!(beside_data(&dir.path().join("keys/master.key"), &data, remote).is_some());
        // Apart from the data directory, with a remote store: fine.
        let apart = dir.path().join("etc/master.key");
        assert_eq!(beside_data(&apart, &data, remote), None);
        // The same file system as a local store: a copy of that disk holds both.
        let store = dir.path().join("store");
        let same = beside_data(&apart, &data, Some(&store)).unwrap();
        assert!(
            same.contains("same file system as the local store"),
            "{same}"
        );
    }
}
