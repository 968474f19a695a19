//! What an operator installs besides the binary: the systemd unit (accepted by systemd itself,
//! sandboxed as the README says), the sample configuration it points at, the sysctl file that
//! lets the QUIC socket have its receive buffer, and the licence.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_quire");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `dist/<unit>` has `directives`, systemd accepts it, and every flag its ExecStart passes is
/// one `quire <command>` takes.
fn valid_unit(unit_file: &str, command: &str, directives: &[&str]) {
    let unit = std::fs::read_to_string(root().join("dist").join(unit_file)).unwrap();
    for directive in directives {
        assert!(unit.contains(directive), "{unit_file} lacks {directive:?}");
    }
    // systemd's own check, with ExecStart pointing at the binary under test (it checks that
    // the executable exists). It warns on stderr about any directive it does not accept.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(unit_file);
    std::fs::write(&copy, unit.replace("/usr/local/bin/quire", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", copy.to_str().unwrap()])
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(exec.contains(&format!("quire {command} ")), "{exec}");
    let help = Command::new(BIN)
        .args([command, "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "quire {command} has no {flag}");
    }
}

#[test]
fn the_systemd_unit_is_valid_and_sandboxed() {
    valid_unit(
        "quire.service",
        "serve",
        &[
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "RuntimeDirectory=quire",
            "StateDirectory=quire",
            "LimitNOFILE=",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "CapabilityBoundingSet=\n",
        ],
    );
}

#[test]
fn the_agent_unit_is_valid_and_may_write_only_its_folder() {
    valid_unit(
        "quire-agent.service",
        "agent",
        &[
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "ReadWritePaths=/srv/scans",
            "--watch /srv/scans",
            "Restart=always",
            "CapabilityBoundingSet=\n",
        ],
    );
}

#[test]
fn the_sample_configuration_is_a_production_one() {
    let path = root().join("dist/quire.toml");
    let c = quire_server::config::ServerConfig::load(Some(&path), None, None).unwrap();
    assert_eq!(c.data_dir, Path::new("/var/lib/quire"));
    assert_eq!(
        c.spool_key_dir.as_deref(),
        Some(Path::new("/run/quire/spool-keys"))
    );
    assert!(!c.dev_bootstrap);
    match &c.vault {
        quire_server::config::VaultConfig::File {
            master_key: Some(key),
            allow_in_data_dir: false,
        } => assert!(!key.starts_with(&c.data_dir), "{}", key.display()),
        other => panic!("the sample's vault keeps no master key apart: {other:?}"),
    }
    let tls = c.tls.expect("[tls] set");
    assert!(tls.ca.is_some());
    let unit = std::fs::read_to_string(root().join("dist/quire.service")).unwrap();
    assert!(unit.contains("--config /etc/quire/quire.toml"));
}

#[test]
fn the_licence_is_the_one_cargo_toml_names() {
    let licence = std::fs::read_to_string(root().join("LICENSE")).unwrap();
    assert!(licence.contains("Apache License") && licence.contains("Version 2.0, January 2004"));
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"Apache-2.0\""));
}

/// The sysctl file lifts the kernel's cap far enough for the QUIC socket's whole buffer
/// (Linux caps the size set, which is half the size it reports), and `sysctl` reads it.
#[test]
fn the_sysctl_file_lets_the_quic_socket_have_its_buffer() {
    let path = root().join("dist/60-quire-udp.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let settings: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').expect("key = value"))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    assert_eq!(settings.len(), 1, "{settings:?}");
    assert_eq!(settings[0].0, "net.core.rmem_max");
    let cap: usize = settings[0].1.parse().unwrap();
    assert!(cap >= quire_net::udp::RECEIVE_BUFFER / 2, "{cap}");
    // The key exists on this kernel (what `sysctl --system` would set).
    assert!(Path::new("/proc/sys/net/core/rmem_max").exists());
}
