//! A server with a certificate from a private CA (root → intermediate → leaf for
//! `localhost`): scanners enroll by host name and keep the CA, not the leaf, so a renewed
//! certificate from the same CA, loaded on SIGHUP without a restart, keeps them working; a
//! certificate from another CA is refused with an error that says what to do.

use crate::common::pki::*;
use crate::common::*;
use quire_client::credential::{Credential, CredentialFile};
use quire_client::Connection;
use rcgen::KeyPair;

#[test]
fn scanners_trust_the_ca_across_renewals_and_refuse_another_ca() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Quire Test CA");
    let first_leaf = pki.issue_leaf(pki_dir.path());
    std::fs::write(pki_dir.path().join("ca.pem"), &pki.root_pem).unwrap();
    let p = |f: &str| pki_dir.path().join(f).display().to_string();
    let server = TestServer::start_with_config(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
        p("chain.pem"),
        p("key.pem"),
        p("ca.pem")
    ));

    // Credentials written by the server pin the root CA, not the leaf.
    let admin_path = server.admin_cred_path();
    let admin_cred = Credential::load(&admin_path).unwrap();
    assert_eq!(pem_der(&admin_cred.server_ca), pki.root_der);
    let admin = admin_path.to_str().unwrap();

    // A token pins the CA; enrollment by host name keeps the CA.
    let token = server.token(admin, "dev");
    let by_name = format!("localhost:{}", server.addr.port());
    let cred_path = server.path().join("scanner.cred");
    let o = server.quire(&[
        "enroll",
        "--server",
        &by_name,
        "--token",
        &token,
        "--device-id",
        "scanner-ca",
        "--out",
        cred_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cred = Credential::load(&cred_path).unwrap();
    assert_eq!(cred.server, by_name);
    assert_eq!(cred.server_name, "localhost");
    assert_eq!(pem_der(&cred.server_ca), pki.root_der);
    server.enable_device(admin, "scanner-ca");

    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("page-1.tif"), b"first scan").unwrap();
    let push = || server.push_as(&job, &cred_path);
    let o = push();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let served = |cred: &Credential| {
        rt.block_on(async {
            let c = Connection::connect_to(cred, &cred.server).await.unwrap();
            let leaf = c.server_certificates().remove(0);
            c.close().await;
            leaf
        })
    };
    assert_eq!(served(&cred), first_leaf);

    // Renewal: a new key and leaf from the same CA, loaded on SIGHUP. A connection opened
    // before keeps working; new ones get the new leaf; the same credential still pushes.
    let live = rt
        .block_on(Connection::connect_to(&cred, &cred.server))
        .unwrap();
    let renewed_leaf = pki.issue_leaf(pki_dir.path());
    hangup(&server, reload_count(&server));
    assert_eq!(served(&cred), renewed_leaf);
    let still = rt.block_on(live.call(&quire_codecs::wire::Frame::JobOpen {
        tenant: "dev".into(),
        job_id: "opened-after-the-reload".into(),
        upload: Some(quire_codecs::wire::UploadId::random()),
    }));
    assert!(
        matches!(still, Ok(quire_codecs::wire::Frame::JobStatus { .. })),
        "the connection opened before the reload: {still:?}"
    );
    rt.block_on(live.close());
    std::fs::write(job.join("page-2.tif"), b"second scan").unwrap();
    let o = push();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A key that does not match the certificate: the reload fails (on SIGHUP, and asked for
    // with `quire admin tls reload`, which says why) and the renewed leaf stays.
    let good_key = std::fs::read(pki_dir.path().join("key.pem")).unwrap();
    std::fs::write(
        pki_dir.path().join("key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    hangup(&server, reload_count(&server));
    assert!(server.log_text().contains("TLS reload failed"));
    let o = server.quire(&["admin", "--credential", admin, "tls", "reload"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the certificate in use stays"), "{err}");
    assert_eq!(served(&cred), renewed_leaf);
    std::fs::write(pki_dir.path().join("key.pem"), good_key).unwrap();

    // Only a service admin may reload.
    let o = server.quire(&[
        "admin",
        "--credential",
        cred_path.to_str().unwrap(),
        "tls",
        "reload",
    ]);
    assert!(!o.status.success());

    // A leaf from another CA, loaded with `quire admin tls reload`: scanners refuse it and say
    // what to do.
    let other = Pki::new("Someone Else's CA");
    other.issue_leaf(pki_dir.path());
    let o = server.quire(&["admin", "--credential", admin, "tls", "reload"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = push();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not one this credential trusts") && err.contains("enroll again"),
        "{err}"
    );
}

#[test]
fn a_server_address_that_is_not_host_port_is_refused_before_connecting() {
    let server = TestServer::in_process();
    let o = server.quire(&[
        "push",
        "--server",
        "ingest.example.com",
        "x",
        "--no-progress",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("host:port"), "{err}");
    let o = server.quire(&["push", "--server", "no-such-host.invalid:4433", "x"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-such-host.invalid"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
