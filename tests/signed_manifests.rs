//! Signed manifests through the real server and CLI: every committed job is signed;
//! `quire get` checks the signature and writes the manifest where asked; the tenant's
//! public keys are exported with their periods; `quire verify` and an independent Python
//! verifier prove a folder matches what was scanned, offline, and catch any change to a
//! page, a name, a digest or the time; a key rotation, and retiring the old key version,
//! leave older manifests verifiable.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

fn admin(server: &TestServer, args: &[&str]) -> Output {
    let cred = server.admin_cred_path();
    let mut full = vec!["admin", "--credential", cred.to_str().unwrap()];
    full.extend_from_slice(args);
    server.quire(&full)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

/// A job folder with a 255-byte non-ASCII name among real sample pages.
fn job_dir(server: &TestServer, name: &str) -> PathBuf {
    let dir = server.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    for f in std::fs::read_dir(samples).unwrap().take(3) {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let long = format!("{}.txt", "ä".repeat(125)); // 250 + 4 bytes
    assert!(long.len() <= 255);
    std::fs::write(dir.join(long), "Rechnung Nr. 17").unwrap();
    dir
}

fn export_keys(server: &TestServer, name: &str) -> (PathBuf, serde_json::Value) {
    let path = server.path().join(name);
    ok(admin(
        server,
        &[
            "signing-key",
            "export",
            "--tenant",
            "dev",
            "--out",
            path.to_str().unwrap(),
        ],
    ));
    let doc = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (path, doc)
}

fn verify_offline(server: &TestServer, dir: &Path, manifest: &Path, keys: &Path) -> Output {
    server.quire(&[
        "verify",
        dir.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--public-key",
        keys.to_str().unwrap(),
    ])
}

fn python(manifest: &Path, keys: &Path, folder: &Path) -> Output {
    std::process::Command::new(crate::common::python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/verify_manifest.py"))
        .arg(manifest)
        .args(["--keys", keys.to_str().unwrap(), "--folder"])
        .arg(folder)
        .output()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn a_delivered_folder_is_proven_against_its_signed_manifest() {
    let server = TestServer::start();
    let job = server.push_ok(
        &job_dir(&server, "in"),
        &["--no-progress", "--job", "signed"],
    );
    let (out, manifest) = (server.path().join("out"), server.path().join("signed.json"));
    let got = server.get_with_manifest(&job, &out, &manifest);
    assert!(
        got.contains("signed by sign-1") && got.contains("verified"),
        "{got}"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        4,
        "only the pages"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(doc["type"], "quire-signed-manifest");
    assert_eq!(
        (doc["tenant"].as_str(), doc["job_id"].as_str()),
        (Some("dev"), Some("signed"))
    );
    assert_eq!(doc["pages"].as_array().unwrap().len(), 4);
    let committed = doc["committed_unix_ms"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        committed <= now_ms && now_ms - committed < 600_000,
        "{committed}"
    );

    let (keys, exported) = export_keys(&server, "keys.json");
    let listed = exported["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["key_id"], "sign-1");
    assert_eq!(listed[0]["public_key"], doc["public_key"]);
    assert!(listed[0]["valid_from_unix_ms"].as_u64().unwrap() <= committed);
    assert!(listed[0]["valid_until_unix_ms"].is_null());

    // Offline, with the exported keys: Quire's verifier and an independent one agree.
    let proved = ok(verify_offline(&server, &out, &manifest, &keys));
    assert!(proved.contains("all 4 pages"), "{proved}");
    let py = python(&manifest, &keys, &out);
    assert!(py.status.success(), "{}", text(&py));
    // Online: the server hands the manifest and the keys.
    let online = ok(server.quire(&["verify", "--job", &job, "--out", out.to_str().unwrap()]));
    assert!(online.contains("all 4 pages"), "{online}");

    // Tampering with a page, a name, a digest or the time is caught by both.
    let page = doc["pages"][0]["name"].as_str().unwrap().to_string();
    type Change<'a> = Box<dyn Fn(&Path, &Path) + 'a>;
    let tampered: Vec<(&str, Change)> = vec![
        (
            "a page's bytes",
            Box::new(|d, _| {
                let p = d.join(&page);
                let mut b = std::fs::read(&p).unwrap();
                b[100] ^= 1;
                std::fs::write(p, b).unwrap();
            }),
        ),
        (
            "a page's name",
            Box::new(|d, _| std::fs::rename(d.join(&page), d.join("renamed.jpg")).unwrap()),
        ),
        (
            "a digest in the manifest",
            Box::new(|_, f| edit(f, |m| m["pages"][1]["sha256"] = "00".repeat(32).into())),
        ),
        (
            "a name in the manifest",
            Box::new(|_, f| edit(f, |m| m["pages"][0]["name"] = "other.jpg".into())),
        ),
        (
            "the time",
            Box::new(|_, f| {
                edit(f, |m| {
                    m["committed_unix_ms"] = (committed - 86_400_000).into()
                })
            }),
        ),
    ];
    for (i, (what, change)) in tampered.iter().enumerate() {
        let copy = server.path().join(format!("tampered-{i}"));
        let copied = server.path().join(format!("tampered-{i}.json"));
        copy_dir(&out, &copy);
        std::fs::copy(&manifest, &copied).unwrap();
        change(&copy, &copied);
        let ours = verify_offline(&server, &copy, &copied, &keys);
        assert!(!ours.status.success(), "{what}: {}", text(&ours));
        let theirs = python(&copied, &keys, &copy);
        assert!(!theirs.status.success(), "{what}: {}", text(&theirs));
    }
    // A key nobody trusts is refused, whatever the manifest itself claims.
    let stranger = format!("sign-1={}", "11".repeat(32));
    let o = server.quire(&[
        "verify",
        out.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--public-key",
        &stranger,
    ]);
    assert!(
        !o.status.success() && text(&o).contains("does not match"),
        "{}",
        text(&o)
    );
}

fn edit(path: &Path, change: impl Fn(&mut serde_json::Value)) {
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    change(&mut m);
    std::fs::write(path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// After a key rotation the new key signs; the export lists both with their periods; the
/// old job still verifies, online and offline, even once the old vault key version is
/// retired (its public key stays published).
#[test]
fn rotation_and_retirement_keep_older_manifests_verifiable() {
    let server = TestServer::start();
    let old = server.push_ok(&job_dir(&server, "a"), &["--no-progress", "--job", "old"]);
    ok(admin(&server, &["key", "rotate", "--tenant", "dev"]));
    let new = server.push_ok(&job_dir(&server, "b"), &["--no-progress", "--job", "new"]);
    let (old_out, new_out) = (server.path().join("old"), server.path().join("new"));
    let got = server.get_with_manifest(&new, &new_out, &server.path().join("new.json"));
    assert!(got.contains("signed by sign-2"), "{got}");
    server.get_with_manifest(&old, &old_out, &server.path().join("old.json"));

    ok(admin(&server, &["key", "rewrap", "--tenant", "dev"]));
    ok(admin(
        &server,
        &["key", "retire", "--tenant", "dev", "--version", "1"],
    ));
    let (keys, exported) = export_keys(&server, "keys.json");
    let listed = exported["keys"].as_array().unwrap();
    let ids: Vec<&str> = listed
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sign-1", "sign-2"]);
    assert_eq!(
        listed[0]["valid_until_unix_ms"],
        listed[1]["valid_from_unix_ms"]
    );
    assert!(listed[1]["valid_until_unix_ms"].is_null());
    for (dir, manifest) in [(&old_out, "old.json"), (&new_out, "new.json")] {
        let manifest = server.path().join(manifest);
        ok(verify_offline(&server, dir, &manifest, &keys));
        let py = python(&manifest, &keys, dir);
        assert!(py.status.success(), "{}", text(&py));
    }
    let online = ok(server.quire(&["verify", "--job", &old, "--out", old_out.to_str().unwrap()]));
    assert!(online.contains("sign-1"), "{online}");
}
