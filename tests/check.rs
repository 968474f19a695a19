//! `quire serve --check`: reaches what the configuration names without serving, and names
//! what is wrong: a bucket that does not exist (real S3: moto), a spool key directory open to
//! others, a key that does not match the certificate, a data directory a running server holds.

use crate::common::*;

fn s3_toml(bucket: &str) -> String {
    format!(
        "[vault]\nmaster_key = \"secrets/master.key\"\n{}",
        s3_store(bucket)
    )
}

fn s3_store(bucket: &str) -> String {
    format!(
        "[store]\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"eu-central-1\"\nbucket = \"{bucket}\"\naccess_key_id = \"quire-test\"\nsecret_access_key = \"quire-test-secret\"\n",
        required_env("QUIRE_TEST_S3_ENDPOINT")
    )
}

#[test]
fn a_good_configuration_passes_and_each_fault_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str| {
        std::fs::write(dir.path().join("quire.toml"), toml).unwrap();
        run(dir.path(), &["serve", "--check", "--config", "quire.toml"])
    };

    let (ok, out, err) = check(&s3_toml(&required_env("QUIRE_TEST_S3_BUCKET")));
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.matches("\nok    ").count() + usize::from(out.starts_with("ok    ")),
        5,
        "{out}"
    );
    assert!(out.contains("write, read and delete work"), "{out}");
    assert!(out.contains("ok    udp receive buffer: "), "{out}");
    assert!(
        !dir.path().join("quire-data/meta.redb").exists(),
        "--check created the metadata store"
    );

    assert!(
        out.contains("secrets/master.key will be generated"),
        "{out}"
    );

    // The master key left where earlier versions put it: inside the data directory.
    let (ok, out, _) = check(&s3_store(&required_env("QUIRE_TEST_S3_BUCKET")));
    assert!(!ok);
    assert!(
        out.contains("FAIL  metadata and vault") && out.contains("inside the data directory"),
        "{out}"
    );

    let (ok, out, _) = check(&s3_toml("no-such-bucket"));
    assert!(!ok);
    assert!(
        out.contains("FAIL  store") && out.contains("no-such-bucket"),
        "{out}"
    );

    // A spool key directory the server would refuse (open to others).
    use std::os::unix::fs::PermissionsExt;
    let keys = dir.path().join("open-keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, out, _) = check(&format!("[spool]\nkey_dir = \"{}\"\n", keys.display()));
    assert!(!ok);
    assert!(
        out.contains("FAIL  spool keys") && out.contains("chmod 700"),
        "{out}"
    );

    // A key that is not the certificate's.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), other.serialize_pem()).unwrap();
    let (ok, out, _) = check("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
    assert!(!ok);
    assert!(out.contains("FAIL  tls"), "{out}");
}

#[test]
fn a_data_directory_in_use_is_named() {
    let server = TestServer::start();
    let (ok, out, _) = run(server.path(), &["serve", "--check"]);
    assert!(!ok);
    assert!(
        out.contains("FAIL  metadata and vault") && out.contains("stop it first"),
        "{out}"
    );
}

/// `--check` reaches the configured key service: a wrong HSM PIN, a missing token or an
/// unreachable KMS is named; the right ones pass.
#[test]
fn the_key_service_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let check = |vault: &str| {
        std::fs::write(dir.path().join("quire.toml"), vault).unwrap();
        run(dir.path(), &["serve", "--check", "--config", "quire.toml"])
    };
    let label = format!("check-{}", std::process::id());
    softhsm_token(&label, "22221111");
    let hsm = |pin: &str, token: &str| {
        format!(
            "[vault]\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"{token}\"\npin = \"{pin}\"\n",
            required_env("QUIRE_TEST_PKCS11_MODULE")
        )
    };
    let (ok, out, _) = check(&hsm("22221111", &label));
    assert!(ok && out.contains("logged in to token"), "{out}");
    let (ok, out, _) = check(&hsm("00000000", &label));
    assert!(
        !ok && out.contains("FAIL  metadata and vault") && out.contains("PIN"),
        "{out}"
    );
    let (ok, out, _) = check(&hsm("22221111", "no-such-token"));
    assert!(!ok && out.contains("no token labelled"), "{out}");

    let kms = |endpoint: &str| {
        format!("[vault]\nkind = \"aws-kms\"\nendpoint = \"{endpoint}\"\nregion = \"eu-central-1\"\naccess_key_id = \"quire-test\"\nsecret_access_key = \"quire-test-secret\"\n")
    };
    let (ok, out, _) = check(&kms(&required_env("QUIRE_TEST_KMS_ENDPOINT")));
    assert!(
        ok && out.contains("answers to Quire's credentials"),
        "{out}"
    );
    let (ok, out, _) = check(&kms("http://127.0.0.1:9"));
    assert!(!ok && out.contains("unavailable"), "{out}");
}
