//! Tenant isolation: a device or admin of one tenant can never write, read, list or learn the
//! existence of another tenant's data, whatever the frames, job ids or file names say.

use crate::common::*;
use bytes::Bytes;
use quire_client::credential::{Credential, CredentialFile};
use quire_client::{expect_answer, ClientError, Connection};
use quire_codecs::wire::{self, ErrorCode, Frame};

fn admin(server: &TestServer, cred: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut full = vec!["admin", "--credential", cred.to_str().unwrap()];
    full.extend_from_slice(args);
    server.quire(&full)
}

/// Creates tenant `acme` with an enabled scanner and a tenant admin; returns their credentials.
fn second_tenant(server: &TestServer) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = server.admin_cred_path();
    assert!(admin(server, &root, &["tenant", "create", "acme"])
        .status
        .success());
    let dev = server.path().join("acme-scanner.cred");
    let adm = server.path().join("acme-admin.cred");
    for (id, role, out) in [
        ("acme-scanner", "device", &dev),
        ("acme-admin", "tenant-admin", &adm),
    ] {
        let o = admin(
            server,
            &root,
            &[
                "device",
                "create",
                "--tenant",
                "acme",
                "--id",
                id,
                "--role",
                role,
                "--enable",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    (dev, adm)
}

#[test]
fn same_job_ids_in_two_tenants_stay_apart() {
    let server = TestServer::in_process();
    let (acme, _) = second_tenant(&server);
    let a = server.path().join("a");
    let b = server.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    std::fs::write(a.join("page.tif"), b"dev's page").unwrap();
    std::fs::write(b.join("page.tif"), b"acme's page").unwrap();
    server.push_ok(&a, &["--job", "invoice-1", "--no-progress"]);
    server.push_ok(
        &b,
        &[
            "--job",
            "invoice-1",
            "--no-progress",
            "--credential",
            acme.to_str().unwrap(),
        ],
    );
    let out_dev = server.path().join("out-dev");
    let out_acme = server.path().join("out-acme");
    server.get_ok("invoice-1", &out_dev);
    let o = server.quire(&[
        "get",
        "--job",
        "invoice-1",
        "--out",
        out_acme.to_str().unwrap(),
        "--credential",
        acme.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(out_dev.join("page.tif")).unwrap(),
        b"dev's page"
    );
    assert_eq!(
        std::fs::read(out_acme.join("page.tif")).unwrap(),
        b"acme's page"
    );
    for f in server.stored_files() {
        let rel = f
            .strip_prefix(server.store_dir())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            rel.starts_with("tenants/dev/jobs/") || rel.starts_with("tenants/acme/jobs/"),
            "{rel}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_jobs_are_indistinguishable_from_missing_ones() {
    let server = TestServer::in_process();
    let (acme, _) = second_tenant(&server);
    server.push_ok(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job"),
        &["--job", "dev-secret-job", "--no-progress"],
    );
    let acme = Credential::load(&acme).unwrap();
    let conn = Connection::connect(&acme, Some(server.addr)).await.unwrap();

    let get = |job: &str| {
        let conn = &conn;
        let job = job.to_string();
        async move {
            conn.call(&Frame::JobGet {
                tenant: "acme".into(),
                job_id: job,
                page: None,
                reason: String::new(),
            })
            .await
        }
    };
    let existing_elsewhere = get("dev-secret-job").await.unwrap_err().to_string();
    let never_existed = get("no-such-job").await.unwrap_err().to_string();
    assert_eq!(
        existing_elsewhere.replace("dev-secret-job", "X"),
        never_existed.replace("no-such-job", "X"),
        "the refusal must not tell an existing foreign job from a missing one"
    );
    match conn
        .call(&Frame::JobOpen {
            tenant: "acme".into(),
            job_id: "dev-secret-job".into(),
            upload: None,
        })
        .await
        .unwrap()
    {
        Frame::JobStatus { committed, pages } => assert!(!committed && pages.is_empty()),
        f => panic!("{f:?}"),
    }
    // Naming the other tenant outright is refused, without echoing the caller's tenant.
    for req in [
        Frame::JobGet {
            tenant: "dev".into(),
            job_id: "dev-secret-job".into(),
            page: None,
            reason: String::new(),
        },
        Frame::JobOpen {
            tenant: "dev".into(),
            job_id: "dev-secret-job".into(),
            upload: None,
        },
        Frame::JobCommit {
            tenant: "dev".into(),
            job_id: "dev-secret-job".into(),
            page_count: 0,
            upload: None,
        },
    ] {
        match conn.call(&req).await {
            Err(ClientError::Refused { code, message }) => {
                assert_eq!(code, ErrorCode::TenantMismatch);
                assert!(!message.contains("acme"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_in_job_ids_and_page_names_are_refused() {
    let server = TestServer::in_process();
    // Locally, before anything is sent.
    let dir = server.path().join("j");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("p.tif"), b"x").unwrap();
    for job in ["../acme/jobs/x", "..", ".hidden", "a/b"] {
        let o = server.quire(&["push", dir.to_str().unwrap(), "--job", job, "--no-progress"]);
        assert!(!o.status.success(), "job id {job:?} accepted");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("invalid job id"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // On the wire, hand-built frames with the same tricks: refused as malformed.
    let conn = server.connect().await;
    let mut raw_frames = Vec::new();
    let mut job_trick = vec![0x10u8, 0, 0, 0, 0];
    let mut payload = Vec::new();
    for s in ["dev", "../acme"] {
        payload.extend_from_slice(&(s.len() as u16).to_be_bytes());
        payload.extend_from_slice(s.as_bytes());
    }
    job_trick[1..5].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    job_trick.extend_from_slice(&payload);
    raw_frames.push(job_trick);
    let mut name_trick = Vec::new();
    {
        let mut p = Vec::new();
        for s in ["dev", "job"] {
            p.extend_from_slice(&(s.len() as u16).to_be_bytes());
            p.extend_from_slice(s.as_bytes());
        }
        p.extend_from_slice(&0u32.to_be_bytes());
        let name = "../../etc/passwd";
        p.extend_from_slice(&(name.len() as u16).to_be_bytes());
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&1u64.to_be_bytes());
        p.extend_from_slice(&[0u8; 32]);
        name_trick.push(0x12);
        name_trick.extend_from_slice(&(p.len() as u32).to_be_bytes());
        name_trick.extend_from_slice(&p);
    }
    raw_frames.push(name_trick);
    for raw in raw_frames {
        // Well-formed framing, forbidden contents: the codec itself refuses them.
        let mut d = wire::Decoder::new();
        d.feed(Bytes::from(raw.clone()));
        assert!(d.next_frame().is_err());
        let (mut send, mut reader) = conn.open_raw(Bytes::from(raw)).await.unwrap();
        let _ = send.finish();
        match expect_answer(&mut reader).await {
            Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::Malformed),
            other => panic!("{other:?}"),
        }
    }
    assert!(server.stored_files().is_empty());
}

#[test]
fn a_tenant_admin_cannot_see_or_touch_another_tenant() {
    let server = TestServer::in_process();
    let (_, acme_admin) = second_tenant(&server);
    let cases: [(&[&str], &str); 4] = [
        (
            &["device", "list", "--tenant", "dev"],
            "tenant dev not found",
        ),
        (
            &["device", "disable", "dev-scanner"],
            "device dev-scanner not found",
        ),
        (
            &["device", "enable", "no-such-device"],
            "device no-such-device not found",
        ),
        (
            &[
                "device", "create", "--tenant", "dev", "--id", "intruder", "--out", "i.cred",
            ],
            "tenant dev not found",
        ),
    ];
    for (args, want) in cases {
        let o = admin(&server, &acme_admin, args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let o = admin(
        &server,
        &acme_admin,
        &["device", "list", "--tenant", "acme"],
    );
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("dev-scanner"));
}

#[test]
fn each_tenants_bytes_stay_in_its_regions_store() {
    let server = TestServer::start_with_config(
        "[store]\nkind = \"local\"\npath = \"store-eu\"\nregion = \"eu\"\n\
         [stores.us]\nkind = \"local\"\npath = \"store-us\"\nregion = \"us\"\n\
         [tenants.acme]\nstore = \"us\"\nregion = \"us\"\n\
         [tenants.dev]\nregion = \"eu\"\n",
    );
    let (acme, _) = second_tenant(&server);
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let dev_job = server.push_ok(&samples, &["--no-progress"]);
    let acme_job = server.push_ok(
        &samples,
        &["--no-progress", "--credential", acme.to_str().unwrap()],
    );
    // Each store holds its tenant's documents, and its tenant's public signing key.
    let (eu, eu_keys): (Vec<_>, Vec<_>) = walk(&server.path().join("store-eu"))
        .into_iter()
        .partition(|p| !p.to_string_lossy().contains("/signing/"));
    let (us, us_keys): (Vec<_>, Vec<_>) = walk(&server.path().join("store-us"))
        .into_iter()
        .partition(|p| !p.to_string_lossy().contains("/signing/"));
    assert_eq!(eu.len(), 6);
    assert_eq!(us.len(), 6);
    assert!(
        eu_keys.len() == 1
            && eu_keys[0]
                .to_string_lossy()
                .contains("/signing/tenant/dev/")
    );
    assert!(
        us_keys.len() == 1
            && us_keys[0]
                .to_string_lossy()
                .contains("/signing/tenant/acme/")
    );
    assert!(
        eu.iter()
            .all(|p| p.to_string_lossy().contains("/tenants/dev/")),
        "{eu:?}"
    );
    assert!(
        us.iter()
            .all(|p| p.to_string_lossy().contains("/tenants/acme/")),
        "{us:?}"
    );
    server.get_ok(&dev_job, &server.path().join("out-dev"));
    let o = server.quire(&[
        "get",
        "--job",
        &acme_job,
        "--out",
        "out-acme",
        "--credential",
        acme.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
