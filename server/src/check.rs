//! `quire serve --check`: after the configuration is read, everything the server needs at
//! start is reached without starting it: the TLS files, the metadata store and vault, every
//! object store (a probe object written, read back and deleted), the spool key directory,
//! and what the kernel lets the QUIC socket have of its receive buffer. Besides the probe
//! objects (and a local store's directory) nothing is created. Each line says what was
//! checked and, on failure, what is wrong.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{ServerConfig, StoreKind};
use crate::identity::{CertResolver, Identity, IdentitySource};

/// How long one object store gets to answer the probe.
pub const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// One thing checked.
#[derive(Debug, Clone)]
pub struct Finding {
    pub what: String,
    /// What was found, or what is wrong.
    pub outcome: Result<String, String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(found) => write!(f, "ok    {}: {found}", self.what),
            Err(wrong) => write!(f, "FAIL  {}: {wrong}", self.what),
        }
    }
}

fn finding(what: impl Into<String>, outcome: Result<String, String>) -> Finding {
    Finding {
        what: what.into(),
        outcome,
    }
}

/// Checks everything `config` names; the server must not be running on its data directory
/// (the metadata store is locked while it runs).
pub async fn check(config: &ServerConfig) -> Vec<Finding> {
    let mut found = vec![check_tls(config), check_data(config)];
    let mut stores = vec![("store".to_string(), &config.store)];
    stores.extend(
        config
            .routes
            .iter()
            .map(|(tenant, kind)| (format!("store of tenant {tenant}"), kind)),
    );
    for (owner, kinds) in &config.replicas {
        let whose = match owner.as_str() {
            crate::backup::BACKUP_KEY_OWNER => "the backups".to_string(),
            tenant => format!("tenant {tenant}"),
        };
        stores.extend(
            kinds
                .iter()
                .enumerate()
                .map(|(i, kind)| (format!("replica {} of {whose}", i + 1), kind)),
        );
    }
    for (what, kind) in stores {
        found.push(finding(what, probe_store(kind).await));
    }
    found.push(check_key_dir(config));
    found.extend(check_udp_buffer(Path::new("/proc/sys/net/core/rmem_max")));
    found
}

/// What the kernel's cap (`rmem_max`, read at `cap_file`) lets the QUIC socket's receive
/// buffer be for a server without the capability to exceed it, as `dist/quire.service` runs
/// it (the check itself may run as root, which could). Not a failure when short: the server
/// runs, and drops datagrams under bursts; the advice says what to do. `None` where the
/// kernel keeps no such file.
fn check_udp_buffer(cap_file: &Path) -> Option<Finding> {
    let cap: usize = std::fs::read_to_string(cap_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let buffer = quire_net::udp::ReceiveBuffer::under_cap(quire_net::udp::RECEIVE_BUFFER, cap);
    let found = if buffer.is_short() {
        buffer.advice()
    } else {
        format!("{} KiB (net.core.rmem_max is {cap})", buffer.granted / 1024)
    };
    Some(finding("udp receive buffer", Ok(found)))
}

fn check_tls(config: &ServerConfig) -> Finding {
    let Some(files) = &config.tls else {
        return finding(
            "tls",
            Ok("development certificate (generated on first start; for localhost only)".into()),
        );
    };
    let outcome = Identity::read(&IdentitySource::of(config))
        .and_then(|id| CertResolver::new(&id).map(|_| id))
        .map(|_| match &files.ca {
            Some(ca) => format!("key matches the certificate; scanners pin {}", ca.display()),
            None => "key matches the certificate; scanners pin the certificate itself (set [tls] ca so renewals keep them working)".into(),
        })
        .map_err(|e| e.to_string());
    finding("tls", outcome)
}

fn check_data(config: &ServerConfig) -> Finding {
    let data_dir = &config.data_dir;
    if !config.meta.exists(data_dir) {
        let outcome = writable_dir(data_dir).and_then(|()| {
            let vault = config.vault.probe(data_dir, &config.store)?;
            Ok(format!(
                "{} is new: metadata and keyring are created on first start; vault {vault}",
                data_dir.display()
            ))
        });
        return finding("metadata and vault", outcome);
    }
    let outcome = match crate::keycheck::check_data_dir(config) {
        Ok(report) if report.ok => Ok(format!("{} opens; every key is there", data_dir.display())),
        Ok(report) => Err(report.text.trim().replace('\n', "; ")),
        Err(e) => Err(e.to_string()),
    };
    finding("metadata and vault", outcome)
}

/// Writes, reads back and deletes a probe object.
async fn probe_store(kind: &StoreKind) -> Result<String, String> {
    let store = kind.open().map_err(|e| e.to_string())?;
    let name = store.name().to_string();
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).map_err(|e| e.to_string())?;
    let key = format!("quire-check/{}", hex::encode(tag));
    let body = Bytes::from_static(b"quire serve --check probe");
    let round_trip = async {
        store.put_new(&key, body.clone()).await?;
        let back = store.get(&key).await;
        store.delete(&key).await?;
        back
    };
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, round_trip).await {
        Err(_) => Err(format!(
            "{name}: no answer within {} s (endpoint, network, firewall?)",
            STORE_PROBE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{name}: {e}")),
        Ok(Ok(back)) if back == body => Ok(format!("{name}: write, read and delete work")),
        Ok(Ok(_)) => Err(format!(
            "{name}: the probe object read back different bytes"
        )),
    }
}

fn check_key_dir(config: &ServerConfig) -> Finding {
    use quire_pipeline::spool::keydir;
    let dir = config.key_dir();
    let ram = if keydir::is_ram_backed(&dir) {
        "in RAM"
    } else {
        "on persistent storage (see docs/SECURITY.md)"
    };
    // An existing directory must pass the server's own rules (its user's, closed, no link).
    let outcome = if dir.exists() || dir.is_symlink() {
        keydir::vet(&dir).map_err(|e| e.to_string())
    } else {
        writable_dir(&dir)
    };
    finding(
        "spool keys",
        outcome.map(|()| format!("{} ({ram})", dir.display())),
    )
}

/// `dir` exists and takes a file, or its nearest existing parent does (it is created at start).
fn writable_dir(dir: &Path) -> Result<(), String> {
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or_else(|| Path::new("."));
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    let probe = existing.join(format!(".quire-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("cannot write in {}: {e}", existing.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_buffer_line_follows_the_kernels_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cap_file = dir.path().join("rmem_max");
        std::fs::write(&cap_file, "212992\n").unwrap();
        let line = check_udp_buffer(&cap_file).unwrap().to_string();
        assert!(line.starts_with("ok    udp receive buffer: "), "{line}");
        assert!(
            line.contains("416 KiB") && line.contains("net.core.rmem_max="),
            "{line}"
        );
        std::fs::write(&cap_file, "16777216\n").unwrap();
        let line = check_udp_buffer(&cap_file).unwrap().to_string();
        assert_eq!(
            line,
            "ok    udp receive buffer: 16384 KiB (net.core.rmem_max is 16777216)"
        );
        assert!(check_udp_buffer(&dir.path().join("missing")).is_none());
    }
}
