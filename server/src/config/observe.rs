//! What the operator watches and what proves the record: the metrics listener (`[metrics]`)
//! and the audit trail's checkpoints (`[audit]`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{seconds, ConfigError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsSection {
    /// Where `/metrics`, `/healthz` and `/readyz` are served over HTTP; absent: nowhere.
    listen: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditSection {
    /// A chain's head is signed after at most this many new records...
    checkpoint_records: Option<u64>,
    /// ...or this many seconds after its first unsigned record, whichever comes first.
    checkpoint_interval_secs: Option<f64>,
}

/// When each tenant's audit chain is checkpointed (signed and written to its store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    pub checkpoint_records: u64,
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_records: 1000,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

impl MetricsSection {
    pub(super) fn resolve(self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.listen {
            None => Ok(None),
            Some(s) => Ok(Some(s.parse().map_err(|e| ConfigError::Invalid {
                key: "metrics.listen".into(),
                reason: format!("{s:?} is not an address like 127.0.0.1:9464 ({e})"),
            })?)),
        }
    }
}

impl AuditSection {
    pub(super) fn resolve(self) -> Result<AuditConfig, ConfigError> {
        let default = AuditConfig::default();
        let checkpoint_records = match self.checkpoint_records {
            None => default.checkpoint_records,
            Some(0) => {
                return Err(ConfigError::Invalid {
                    key: "audit.checkpoint_records".into(),
                    reason: "must be at least 1".into(),
                })
            }
            Some(n) => n,
        };
        Ok(AuditConfig {
            checkpoint_records,
            checkpoint_interval: seconds(
                "audit.checkpoint_interval_secs",
                self.checkpoint_interval_secs,
                default.checkpoint_interval,
            )?,
        })
    }
}
