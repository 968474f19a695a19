//! `[backup]`: scheduled backups of a single node's metadata store, keyring files and audit
//! log (see `server/src/backup`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupSection {
    /// How often: a number and a unit, `30m`, `6h`, `1d` (or seconds, `90s`).
    every: Option<String>,
    /// How many complete backups to keep (the oldest go first); 0 keeps all.
    keep: Option<u32>,
    /// `[stores.NAME]`s that get a second copy of every backup (resolved with the stores).
    #[serde(default)]
    pub(super) replicas: Vec<String>,
}

/// When backups are made and how many are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    /// `None`: only on request (`quire admin backup`).
    pub every: Option<Duration>,
    pub keep: u32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            every: None,
            keep: 7,
        }
    }
}

impl BackupSection {
    pub(super) fn resolve(&self) -> Result<BackupConfig, ConfigError> {
        let every = match &self.every {
            None => None,
            Some(text) => Some(interval(text).ok_or_else(|| ConfigError::Invalid {
                key: "backup.every".into(),
                reason: format!("{text:?} is not an interval like \"30m\", \"6h\" or \"1d\""),
            })?),
        };
        Ok(BackupConfig {
            every,
            keep: self.keep.unwrap_or(BackupConfig::default().keep),
        })
    }
}

/// `90s`, `30m`, `6h`, `1d`; not zero.
fn interval(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_take_a_unit_and_are_not_zero() {
        assert_eq!(interval("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(interval("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(interval("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(interval("90s"), Some(Duration::from_secs(90)));
        for bad in [
            "",
            "24",
            "h",
            "0m",
            "0s",
            "1w",
            "-1h",
            "99999999999999999999d",
        ] {
            assert_eq!(interval(bad), None, "{bad}");
        }
    }
}
