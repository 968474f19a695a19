//! A configured server makes no development credentials; its first service administrator
//! comes from `quire admin bootstrap`, once, with the server stopped, and overwrites nothing.

use crate::common::*;

#[test]
fn a_configured_server_gets_its_first_admin_from_a_one_time_bootstrap() {
    // A configuration file without `bootstrap = true`: no development tenant or credentials.
    let mut server = TestServer::start_with_config(
        "[dev]\ntenant = \"dev\"\n[vault]\nallow_master_key_in_data_dir = true\n",
    );
    assert!(
        !server.path().join("quire-data/dev").exists(),
        "a configured server wrote development credentials"
    );
    let port = server.addr.port().to_string();
    let dir = server.path().to_path_buf();
    let admin = dir.join("admin.cred");
    let bootstrap = |out: &std::path::Path| {
        quire_in(
            &dir,
            &[
                "admin",
                "bootstrap",
                "--config",
                "quire.toml",
                "--server",
                &format!("127.0.0.1:{port}"),
                "--out",
                out.to_str().unwrap(),
            ],
        )
    };

    // Not while the server holds the data directory.
    let o = bootstrap(&admin);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("stop it first"), "{err}");
    assert!(!admin.exists());

    server.kill();
    let o = bootstrap(&admin);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("only copy"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&admin).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Once: a second bootstrap is refused, and an existing file is never overwritten.
    let second = dir.join("second.cred");
    let o = bootstrap(&second);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("service administrator already (admin)"),
        "{err}"
    );
    assert!(!second.exists());
    let before = std::fs::read(&admin).unwrap();
    let o = bootstrap(&admin);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&admin).unwrap(), before);

    // The administrator works: it creates a tenant, and the audit log records the bootstrap.
    server.restart();
    let o = server.quire(&[
        "admin",
        "--credential",
        admin.to_str().unwrap(),
        "tenant",
        "create",
        "acme",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let audit = std::fs::read_to_string(server.path().join("quire-data/audit.log")).unwrap();
    assert!(audit.contains("\"action\":\"admin.bootstrap\""), "{audit}");
    // Still no development credentials after a restart.
    assert!(!server.path().join("quire-data/dev").exists());
}

/// The real CLI run from `dir` (the server's directory).
fn quire_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}
