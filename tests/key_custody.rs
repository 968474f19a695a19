//! Lost or wrong key files never lose acknowledged data: the server refuses to start when its
//! keys do not match its data, saying what is missing, and never creates a key in place of
//! a missing one. Restoring the file brings everything back.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// Runs `quire serve` on the server's data directory and expects it to refuse to start.
fn refuses_to_start(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(!status.success());
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("quire serve started although its keys do not match its data");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn one_job(server: &TestServer) -> String {
    let dir = server.path().join("job");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.jpg"), b"acknowledged page").unwrap();
    server.push_ok(&dir, &["--no-progress"])
}

#[test]
fn a_missing_or_wrong_master_key_stops_the_server_and_is_never_replaced() {
    let mut server = TestServer::start();
    let job = one_job(&server);
    server.kill();
    let vault = server.path().join("quire-data/vault");
    let master = vault.join("master.key");
    let saved = std::fs::read(&master).unwrap();

    std::fs::remove_file(&master).unwrap();
    let err = refuses_to_start(server.path(), &[]);
    assert!(
        err.contains("master key") && err.contains("missing"),
        "{err}"
    );
    assert!(err.contains("restore master.key"), "{err}");
    assert!(!master.exists(), "a new master key was generated");

    std::fs::write(&master, hex::encode([7u8; 32])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = refuses_to_start(server.path(), &[]);
    assert!(
        err.contains("does not open under this vault's key"),
        "{err}"
    );

    std::fs::write(&master, &saved).unwrap();
    let err = refuses_to_start(server.path(), &[("QUIRE_MASTER_KEY", &"ab".repeat(32))]);
    assert!(
        err.contains("does not open under this vault's key"),
        "{err}"
    );

    server.restart();
    let out = server.path().join("out");
    server.get_ok(&job, &out);
    assert_eq!(
        std::fs::read(out.join("p.jpg")).unwrap(),
        b"acknowledged page"
    );
}

#[test]
fn a_missing_tenant_key_stops_the_server_and_no_push_replaces_it() {
    let mut server = TestServer::start();
    let job = one_job(&server);
    let kek = server.path().join("quire-data/vault/tenants/dev.kek");
    let saved = std::fs::read(&kek).unwrap();

    // Lost while the server was stopped (a restore from an incomplete backup, say).
    server.kill();
    std::fs::remove_file(&kek).unwrap();
    let err = refuses_to_start(server.path(), &[]);
    assert!(
        err.contains("tenant dev")
            && err.contains("restore its keyring file (dev.kek under vault/tenants/"),
        "{err}"
    );
    assert!(!kek.exists(), "a new tenant key was created");
    let check = server.quire(&["admin", "vault", "check"]);
    assert!(!check.status.success());
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains(
            "tenant dev: 0 key version(s) in the vault, 0 recorded, 1 stored job(s): MISSING KEYS"
        ),
        "{report}"
    );

    std::fs::write(&kek, &saved).unwrap();
    let check = server.quire(&["admin", "vault", "check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout)
        .contains("tenant dev: 1 key version(s) in the vault"));
    server.restart();
    let out = server.path().join("out");
    server.get_ok(&job, &out);
    // A rotation is recorded; losing the file after it is noticed too.
    let o = rotate(&server);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let two = std::fs::read(&kek).unwrap();
    server.kill();
    std::fs::write(&kek, &saved).unwrap(); // an old backup with version 1 only
    let err = refuses_to_start(server.path(), &[]);
    assert!(err.contains("2 key version(s)"), "{err}");
    std::fs::write(&kek, two).unwrap();
    server.restart();
    server.get_ok(&job, &server.path().join("out2"));
}

#[test]
fn a_key_lost_while_running_is_not_replaced_by_a_push() {
    let server = TestServer::start();
    let job = one_job(&server);
    let kek = server.path().join("quire-data/vault/tenants/dev.kek");
    let saved = std::fs::read(&kek).unwrap();
    std::fs::remove_file(&kek).unwrap();
    // Wait out nothing: a rotate reads the file now, and must refuse rather than start over.
    let o = rotate(&server);
    assert!(!o.status.success());
    assert!(!kek.exists(), "a new tenant key file was written");
    std::fs::write(&kek, saved).unwrap();
    server.get_ok(&job, &server.path().join("out"));
}

/// `quire admin key rotate --tenant dev` as the development service admin.
fn rotate(server: &TestServer) -> std::process::Output {
    let cred = server.admin_cred_path();
    server.quire(&[
        "admin",
        "--credential",
        cred.to_str().unwrap(),
        "key",
        "rotate",
        "--tenant",
        "dev",
    ])
}
