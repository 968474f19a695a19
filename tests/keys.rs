//! Tenant keys through the real server: rotation, re-wrapping stored data keys without
//! touching bodies, retiring an old version, and crypto-shredding.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::common::*;
use quire_codecs::sealed::Header;

fn admin(server: &TestServer, args: &[&str]) -> (bool, String) {
    let cred = server.admin_cred_path();
    let mut full = vec!["admin", "--credential", cred.to_str().unwrap()];
    full.extend_from_slice(args);
    let o = server.quire(&full);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn headers(server: &TestServer) -> HashMap<PathBuf, (u32, Vec<u8>)> {
    server
        .stored_files()
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let h = Header::parse(&bytes).unwrap().unwrap();
            let body = bytes[h.encoded().len()..].to_vec();
            (p, (h.kek.version, body))
        })
        .collect()
}

#[test]
fn rotate_rewrap_and_shred() {
    let server = TestServer::in_process();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let job_a = server.push_ok(&samples, &["--no-progress", "--job", "before-rotation"]);

    let (ok, out) = admin(&server, &["key", "rotate", "--tenant", "dev"]);
    assert!(ok && out.contains("key version 2"), "{out}");
    let job_b = server.push_ok(&samples, &["--no-progress", "--job", "after-rotation"]);

    let before = headers(&server);
    let v1: Vec<_> = before.iter().filter(|(_, (v, _))| *v == 1).collect();
    assert_eq!(
        v1.len(),
        6,
        "job A: five pages and a manifest under version 1"
    );
    assert!(v1.iter().all(|(p, _)| p.to_string_lossy().contains(&job_a)));

    for job in [&job_a, &job_b] {
        server.get_ok(job, &server.path().join(format!("out-{job}")));
    }

    // Version 1 still holds job A's objects: retiring it is refused, with the count.
    let (ok, out) = admin(
        &server,
        &["key", "retire", "--tenant", "dev", "--version", "1"],
    );
    assert!(
        !ok && out.contains("6 stored object(s)") && out.contains("rewrap"),
        "{out}"
    );
    let (ok, out) = admin(
        &server,
        &["key", "retire", "--tenant", "dev", "--version", "2"],
    );
    assert!(!ok && out.contains("newest"), "{out}");

    let (ok, out) = admin(&server, &["key", "rewrap", "--tenant", "dev"]);
    assert!(
        ok && out.contains("6 objects re-wrapped to key version 2"),
        "{out}"
    );
    let after = headers(&server);
    for (path, (version, body)) in &after {
        assert_eq!(*version, 2, "{} still under an old key", path.display());
        assert_eq!(body, &before[path].1, "{} body changed", path.display());
    }
    // Nothing is under version 1 any more: it may go, and everything still opens.
    let (ok, out) = admin(
        &server,
        &["key", "retire", "--tenant", "dev", "--version", "1"],
    );
    assert!(ok && out.contains("key version 1 destroyed"), "{out}");
    let restored = server.path().join("after-rewrap");
    server.get_ok(&job_a, &restored);
    for f in walk(&samples) {
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(restored.join(f.file_name().unwrap())).unwrap()
        );
    }

    // Crypto-shredding: objects written before can no longer be opened, by anyone.
    let (ok, out) = admin(&server, &["tenant", "shred", "dev"]);
    assert!(ok, "{out}");
    let o = server.quire(&[
        "get",
        "--job",
        &job_a,
        "--out",
        server.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("revoked"),
        "the shredded tenant's device must be refused: {err}"
    );
    // Even with a fresh service-admin view of the store, the keys are gone from the vault.
    let vault = quire_pipeline::Keyring::file(&server.path().join("quire-data/vault")).unwrap();
    for path in after.keys() {
        let bytes = std::fs::read(path).unwrap();
        let h = Header::parse(&bytes).unwrap().unwrap();
        let e = quire_pipeline::KeyVault::kek(&vault, &h.kek).unwrap_err();
        assert!(e.to_string().contains("destroyed"), "{e}");
    }
    assert!(!server
        .path()
        .join("quire-data/vault/tenants/dev.kek")
        .exists());
    let o = server.quire(&["push", samples.to_str().unwrap(), "--no-progress"]);
    assert!(!o.status.success());

    // The metadata forgot what the pages were (names, sizes, digests); the jobs' counts stay.
    let mut server = server;
    server.kill();
    let meta = quire_server::meta::Meta::open(&server.path().join("quire-data/meta.redb")).unwrap();
    use quire_server::meta::MetaStore;
    for job in [&job_a, &job_b] {
        assert!(meta.pages("dev", job).unwrap().is_empty(), "{job}");
        assert!(meta.job("dev", job).unwrap().is_some(), "{job}");
    }
}

#[test]
fn key_operations_need_the_right_role() {
    let server = TestServer::in_process();
    let (ok, out) = admin(&server, &["tenant", "create", "acme"]);
    assert!(ok, "{out}");
    let ta = server.path().join("acme-admin.cred");
    let (ok, out) = admin(
        &server,
        &[
            "device",
            "create",
            "--tenant",
            "acme",
            "--id",
            "acme-admin",
            "--role",
            "tenant-admin",
            "--enable",
            "--out",
            ta.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let as_tenant_admin = |args: &[&str]| {
        let mut full = vec!["admin", "--credential", ta.to_str().unwrap()];
        full.extend_from_slice(args);
        let o = server.quire(&full);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, _) = as_tenant_admin(&["key", "rotate", "--tenant", "acme"]);
    assert!(ok, "a tenant admin rotates its own tenant's key");
    let (ok, err) = as_tenant_admin(&["key", "rotate", "--tenant", "dev"]);
    assert!(!ok && err.contains("tenant dev not found"), "{err}");
    let (ok, err) = as_tenant_admin(&["tenant", "shred", "acme"]);
    assert!(!ok && err.contains("service-admin"), "{err}");
    let o = server.quire(&[
        "admin",
        "--credential",
        "quire-data/dev/device.cred",
        "key",
        "rotate",
        "--tenant",
        "dev",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("admin role"));
}
