//! Enrollment: a one-time token turns into a pending device credential; an administrator
//! enables it; the token cannot be used twice; a token pinning another certificate is useless.

use crate::common::*;

#[test]
fn a_scanner_enrolls_waits_for_an_admin_then_sends() {
    let server = TestServer::in_process();
    let admin = server.admin_cred_path();
    let admin = admin.to_str().unwrap();
    let token = server.token(admin, "dev");
    assert!(token.starts_with("qt1."), "{token}");
    let addr = server.addr.to_string();

    let cred = server.path().join("new.cred");
    let enroll = |id: &str, token: &str| {
        server.quire(&[
            "enroll",
            "--server",
            &addr,
            "--token",
            token,
            "--device-id",
            id,
            "--out",
            cred.to_str().unwrap(),
        ])
    };
    let o = enroll("scanner-new", &token);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("pending"));

    // Single use.
    let o = enroll("scanner-other", &token);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A token whose certificate pin does not match this server never reaches it.
    let fresh = server.token(admin, "dev");
    let mut forged = fresh[..fresh.len() - 1].to_string();
    forged.push(if fresh.ends_with('0') { '1' } else { '0' });
    let o = enroll("scanner-forged", &forged);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach the server") || err.contains("certificate"),
        "{err}"
    );
    // ... and the token itself was not consumed by that attempt.
    assert!(enroll("scanner-second", &fresh).status.success());

    // Pending: refused until enabled.
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("p.tif"), b"page").unwrap();
    let second = server.path().join("new.cred");
    let push = || server.push_as(&job, &second);
    let o = push();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("pending"));
    server.enable_device(admin, "scanner-second");
    let o = push();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let list = server.quire(&[
        "admin",
        "--credential",
        admin,
        "device",
        "list",
        "--tenant",
        "dev",
    ]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("scanner-new\tdev\tdevice\tpending"), "{text}");
    assert!(
        text.contains("scanner-second\tdev\tdevice\tenabled"),
        "{text}"
    );
    assert!(
        !text.contains("scanner-other") && !text.contains("scanner-forged"),
        "{text}"
    );
}

#[test]
fn a_malformed_token_is_refused_locally() {
    let server = TestServer::in_process();
    let o = server.quire(&[
        "enroll",
        "--server",
        &server.addr.to_string(),
        "--token",
        "nope",
        "--out",
        "x.cred",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an enrollment token"));
}
