//! A production deployment end to end, once with the tenants' keys in a PKCS#11 HSM
//! (SoftHSM2) and once in AWS KMS (moto's KMS API): a CA-issued certificate for `localhost`,
//! no development credentials, the first admin from `quire admin bootstrap`, a tenant, a
//! scanner enrolled by host name, a job pushed and read back, a certificate renewal on
//! SIGHUP, and a shred after which the tenant's stored pages open nowhere, not even from a
//! copy of the vault directory taken before it. The data directory never holds a master key.

use std::path::{Path, PathBuf};

use crate::common::pki::*;
use crate::common::*;

/// A file only the owner may read, as secrets must be.
fn secret_file(path: &Path, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A SoftHSM2 token of its own, made before the server (a separate process) loads the module.
fn hsm_vault(dir: &Path) -> String {
    let label = format!("prod-{}", std::process::id());
    softhsm_token(&label, "44332211");
    secret_file(&dir.join("hsm.pin"), "44332211\n");
    format!(
        "[vault]\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"{label}\"\npin_file = \"{}\"\n",
        required_env("QUIRE_TEST_PKCS11_MODULE"),
        dir.join("hsm.pin").display()
    )
}

fn kms_vault(dir: &Path) -> String {
    secret_file(&dir.join("kms.secret"), "quire-test-secret");
    format!(
        "[vault]\nkind = \"aws-kms\"\nendpoint = \"{}\"\nregion = \"eu-central-1\"\naccess_key_id = \"quire-test\"\nsecret_access_key_file = \"{}\"\n",
        required_env("QUIRE_TEST_KMS_ENDPOINT"),
        dir.join("kms.secret").display()
    )
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn deploy_push_renew_shred(vault: fn(&Path) -> String, kind: &str) {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Quire Production CA");
    pki.issue_leaf(pki_dir.path());
    std::fs::write(pki_dir.path().join("ca.pem"), &pki.root_pem).unwrap();
    let p = |f: &str| pki_dir.path().join(f).display().to_string();
    let tenant = format!("acme-{kind}-{}", std::process::id());
    let config = format!(
        "[dev]\nbootstrap = false\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n{}",
        p("chain.pem"),
        p("key.pem"),
        p("ca.pem"),
        vault(pki_dir.path())
    );
    let mut server = TestServer::start_with_config(&config);
    let by_name = format!("localhost:{}", server.addr.port());
    assert!(!server.path().join("quire-data/dev").exists());

    // The first administrator, once, with the server stopped.
    server.kill();
    let admin: PathBuf = server.path().join("admin.cred");
    ok(&server.quire(&[
        "admin",
        "bootstrap",
        "--config",
        "quire.toml",
        "--server",
        &by_name,
        "--out",
        admin.to_str().unwrap(),
    ]));
    server.restart();
    let admin = admin.to_str().unwrap();
    ok(&server.quire(&["admin", "--credential", admin, "tenant", "create", &tenant]));

    // A scanner enrolls by host name, is enabled, pushes, and reads its job back.
    let token = server.token(admin, &tenant);
    let scanner = server.path().join("scanner.cred");
    ok(&server.quire(&[
        "enroll",
        "--server",
        &by_name,
        "--token",
        &token,
        "--device-id",
        "scanner-1",
        "--out",
        scanner.to_str().unwrap(),
    ]));
    server.enable_device(admin, "scanner-1");
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    for page in ["01-lion-page.00010.jpg", "03-toc.99.tif"] {
        std::fs::copy(samples.join(page), job.join(page)).unwrap();
    }
    let pushed = server.push_as(&job, &scanner);
    let job_id = last_line(&ok_output(pushed));
    let out = server.path().join("out");
    let cred = scanner.to_str().unwrap();
    ok(&server.quire(&[
        "get",
        "--credential",
        cred,
        "--job",
        &job_id,
        "--out",
        out.to_str().unwrap(),
    ]));
    same_files(&job, &out);

    // The keys are the backend's: the data directory holds no master key and no file vault.
    let data = server.path().join("quire-data");
    for f in walk(&data) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name != "master.key",
            "a master key in the data directory: {}",
            f.display()
        );
    }
    assert!(!data.join("vault/tenants").exists());
    let ring = data.join(format!("vault/{kind}/tenants/{tenant}.kek"));
    assert!(ring.exists(), "no keyring file at {}", ring.display());

    // Renewal: a new leaf from the same CA, SIGHUP, and the same scanner credential pushes.
    pki.issue_leaf(pki_dir.path());
    hangup(&server, reload_count(&server));
    std::fs::write(job.join("page-2.txt"), "after the renewal").unwrap();
    ok_output(server.push_as(&job, &scanner));

    // Shred: the tenant's pages no longer open.
    let before_shred = std::fs::read(&ring).unwrap();
    ok(&server.quire(&["admin", "--credential", admin, "tenant", "shred", &tenant]));
    assert!(!ring.exists(), "the keyring file outlived the shred");
    let o = server.quire(&[
        "get",
        "--credential",
        admin,
        "--tenant",
        &tenant,
        "--job",
        &job_id,
        "--out",
        out.join("again").to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "a shredded job was read back");

    // Even from a copy of the vault taken before the shred, with the shred's mark removed:
    // the backend's keys are gone, so the server refuses to open the keyring at all.
    server.kill();
    std::fs::write(&ring, &before_shred).unwrap();
    std::fs::remove_file(data.join(format!("vault/{kind}/tenants/{tenant}.shredded"))).unwrap();
    let o = server.quire(&["serve", "--config", "quire.toml", "--listen", "127.0.0.1:0"]);
    assert!(
        !o.status.success(),
        "the server opened a shredded tenant's keys"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&tenant) && err.contains("disabled or destroyed"),
        "{err}"
    );
}

fn ok_output(o: std::process::Output) -> Vec<u8> {
    ok(&o);
    o.stdout
}

#[test]
fn a_production_server_with_keys_in_an_hsm() {
    deploy_push_renew_shred(hsm_vault, "pkcs11");
}

#[test]
fn a_production_server_with_keys_in_aws_kms() {
    deploy_push_renew_shred(kms_vault, "aws-kms");
}
