//! Roles: operators look but do not touch; support partners see a tenant only while it grants
//! them access, say why each time, and every access lands in the audit log.

use crate::common::*;

struct Who<'a> {
    server: &'a TestServer,
    cred: std::path::PathBuf,
}

impl Who<'_> {
    fn admin(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec!["admin", "--credential", self.cred.to_str().unwrap()];
        full.extend_from_slice(args);
        let o = self.server.quire(&full);
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    /// `admin grant create` of `partner` on `tenant` for `hours`, with `reason`.
    fn grant(&self, tenant: &str, partner: &str, hours: &str, reason: &str) -> (bool, String) {
        self.admin(&[
            "grant",
            "create",
            "--tenant",
            tenant,
            "--partner",
            partner,
            "--hours",
            hours,
            "--reason",
            reason,
        ])
    }
}

/// The development service admin, after creating tenants `acme` and `helpdesk`.
fn service_admin_with_two_tenants(server: &TestServer) -> Who<'_> {
    let root = Who {
        server,
        cred: server.admin_cred_path(),
    };
    for t in ["acme", "helpdesk"] {
        assert!(root.admin(&["tenant", "create", t]).0);
    }
    root
}

#[test]
fn operators_and_support_partners_see_only_what_they_may() {
    let server = TestServer::in_process();
    let root = service_admin_with_two_tenants(&server);
    let mk = |tenant: &str, id: &str, role: &str| {
        let out = server.path().join(format!("{id}.cred"));
        let (ok, text) = root.admin(&[
            "device",
            "create",
            "--tenant",
            tenant,
            "--id",
            id,
            "--role",
            role,
            "--enable",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        Who {
            server: &server,
            cred: out,
        }
    };
    let acme_admin = mk("acme", "acme-admin", "tenant-admin");
    let ops = mk("acme", "acme-ops", "operator");
    let partner = mk("helpdesk", "hd-1", "support-partner");
    mk("acme", "acme-scanner", "device");

    // The operator reads its tenant, changes nothing, sees nothing else.
    let (ok, out) = ops.admin(&["status", "--tenant", "acme"]);
    assert!(ok && out.contains("tenant acme: 3 devices"), "{out}");
    assert!(ops.admin(&["device", "list", "--tenant", "acme"]).0);
    let (ok, out) = ops.admin(&["device", "disable", "acme-scanner"]);
    assert!(!ok && out.contains("tenant-admin"), "{out}");
    let (ok, out) = ops.admin(&["status", "--tenant", "dev"]);
    assert!(!ok && out.contains("tenant dev not found"), "{out}");
    // A scrub only reads; repairing writes stored objects, which is the tenant admin's.
    let (ok, out) = ops.admin(&["scrub", "--tenant", "acme"]);
    assert!(ok, "{out}");
    let (ok, out) = ops.admin(&["scrub", "--tenant", "acme", "--repair"]);
    assert!(!ok && out.contains("tenant-admin"), "{out}");
    let (ok, out) = acme_admin.admin(&["scrub", "--tenant", "acme", "--repair"]);
    assert!(ok && out.contains("0 repaired, 0 not repaired"), "{out}");

    // No grant: the partner cannot tell the tenant exists.
    let (ok, out) = partner.admin(&["status", "--tenant", "acme", "--reason", "curious"]);
    assert!(!ok && out.contains("tenant acme not found"), "{out}");
    let (ok, out) = acme_admin.grant("acme", "hd-1", "2", "ticket 7: scanner jams");
    assert!(ok, "{out}");
    let (ok, out) = partner.admin(&["status", "--tenant", "acme", "--reason", "ticket 7"]);
    assert!(ok && out.contains("tenant acme"), "{out}");
    let (ok, out) = partner.admin(&["status", "--tenant", "acme"]);
    assert!(!ok && out.contains("must state a reason"), "{out}");
    let (ok, _) = partner.admin(&["device", "disable", "acme-scanner"]);
    assert!(!ok);
    let (ok, _) = partner.admin(&["device", "list", "--tenant", "acme"]);
    assert!(!ok);
    // A tenant admin cannot grant on another tenant's behalf.
    let (ok, out) = acme_admin.grant("dev", "hd-1", "4", "x");
    assert!(!ok && out.contains("tenant dev not found"), "{out}");

    // Revoked: gone at once.
    assert!(
        acme_admin
            .admin(&["grant", "revoke", "--tenant", "acme", "--partner", "hd-1"])
            .0
    );
    let (ok, out) = partner.admin(&["status", "--tenant", "acme", "--reason", "ticket 7"]);
    assert!(!ok && out.contains("not found"), "{out}");

    // The audit log holds every one of those, with who, why and the outcome.
    let audit = std::fs::read_to_string(server.path().join("quire-data/audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |actor: &str, action: &str, outcome_starts: &str| {
        lines.iter().any(|e| {
            e["actor"] == actor
                && e["action"] == action
                && e["outcome"].as_str().unwrap().starts_with(outcome_starts)
        })
    };
    assert!(find("acme-admin", "grant.create", "ok"));
    assert!(find("hd-1", "status", "ok"));
    assert!(find("hd-1", "status", "refused"));
    assert!(find("acme-ops", "device.set-state", "refused"));
    assert!(find("acme-admin", "grant.revoke", "ok"));
    assert!(lines
        .iter()
        .any(|e| e["actor"] == "hd-1" && e["detail"].as_str().unwrap().contains("ticket 7")));
    assert!(lines
        .iter()
        .all(|e| e["ts_unix_ms"].as_u64().unwrap() > 1_700_000_000_000));
}

#[test]
fn revoked_is_final_for_every_administrator() {
    let server = TestServer::in_process();
    let root = Who {
        server: &server,
        cred: server.admin_cred_path(),
    };
    assert!(root.admin(&["tenant", "create", "acme"]).0);
    let scanner = server.create_device("acme", "acme-scanner", "device", true);
    let tenant_admin = Who {
        server: &server,
        cred: server.create_device("acme", "acme-admin", "tenant-admin", true),
    };
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("p.jpg"), b"scan").unwrap();
    let push = || {
        server.quire(&[
            "push",
            job.to_str().unwrap(),
            "--credential",
            scanner.to_str().unwrap(),
            "--no-progress",
            "--again",
        ])
    };
    assert!(push().status.success());

    let (ok, out) = tenant_admin.admin(&["device", "revoke", "acme-scanner"]);
    assert!(ok, "{out}");
    for who in [&tenant_admin, &root] {
        let (ok, out) = who.admin(&["device", "enable", "acme-scanner"]);
        assert!(!ok, "enable after revoke must fail: {out}");
        assert!(
            out.contains("revoked for good") && out.contains("enroll"),
            "{out}"
        );
        let rotated = server.path().join("rotated.cred");
        let (ok, out) = who.admin(&[
            "device",
            "rotate",
            "acme-scanner",
            "--out",
            rotated.to_str().unwrap(),
        ]);
        assert!(!ok, "rotate after revoke must fail: {out}");
        assert!(!rotated.exists());
        let (ok, out) = who.admin(&["device", "disable", "acme-scanner"]);
        assert!(!ok, "a revoked device cannot become merely disabled: {out}");
    }
    let o = push();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("withdrawn for good"), "{err}");
    assert!(!err.contains("administrator must enable"), "{err}");
    let (_, list) = root.admin(&["device", "list", "--tenant", "acme"]);
    assert!(
        list.contains("acme-scanner") && list.contains("revoked"),
        "{list}"
    );
}

#[test]
fn operators_and_support_partners_read_documents_only_under_a_grant_with_a_reason() {
    let server = TestServer::in_process();
    service_admin_with_two_tenants(&server);
    let scanner = server.create_device("acme", "acme-scanner", "device", true);
    let acme_admin = Who {
        server: &server,
        cred: server.create_device("acme", "acme-admin", "tenant-admin", true),
    };
    let ops = server.create_device("acme", "acme-ops", "operator", true);
    let inside = server.create_device("acme", "acme-support", "support-partner", true);
    let outside = server.create_device("helpdesk", "hd-1", "support-partner", true);
    let job = server.path().join("job");
    std::fs::create_dir(&job).unwrap();
    std::fs::write(job.join("invoice.pdf"), b"%PDF confidential").unwrap();
    let o = server.quire(&[
        "push",
        job.to_str().unwrap(),
        "--credential",
        scanner.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success());
    let id = last_line(&o.stdout);

    let get = |cred: &std::path::Path, out: &str, extra: &[&str]| {
        let dir = server.path().join(out);
        let mut args = vec![
            "get",
            "--job",
            &id,
            "--tenant",
            "acme",
            "--out",
            dir.to_str().unwrap(),
            "--credential",
            cred.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = server.quire(&args);
        let read = dir.join("invoice.pdf").exists();
        (
            o.status.success(),
            read,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // The scanner reads back its own job: allowed, and on record like every read.
    let (ok, read, err) = get(&scanner, "own", &[]);
    assert!(ok && read, "{err}");
    // No grant: no document, whatever the reason.
    for (who, cred) in [
        ("operator", &ops),
        ("inside", &inside),
        ("outside", &outside),
    ] {
        let (ok, read, err) = get(cred, &format!("no-grant-{who}"), &["--reason", "curious"]);
        assert!(!ok && !read, "{who} read without a grant: {err}");
    }
    for partner in ["acme-ops", "acme-support", "hd-1"] {
        let (ok, out) = acme_admin.grant("acme", partner, "1", "ticket 9: blank page");
        assert!(ok, "{out}");
    }
    for (who, cred) in [
        ("operator", &ops),
        ("inside", &inside),
        ("outside", &outside),
    ] {
        let (ok, read, err) = get(cred, &format!("no-reason-{who}"), &[]);
        assert!(!ok && !read, "{who} read without a reason: {err}");
        assert!(err.contains("must state a reason"), "{err}");
        let (ok, read, err) = get(cred, &format!("granted-{who}"), &["--reason", "ticket 9"]);
        assert!(ok && read, "{who} with a grant and a reason: {err}");
    }
    let (ok, out) = acme_admin.admin(&["grant", "revoke", "--tenant", "acme", "--partner", "hd-1"]);
    assert!(ok, "{out}");
    let (ok, read, _) = get(&outside, "revoked", &["--reason", "ticket 9"]);
    assert!(!ok && !read);

    let audit = std::fs::read_to_string(server.path().join("quire-data/audit.log")).unwrap();
    let reads: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"] == "document.read")
        .collect();
    assert!(
        reads
            .iter()
            .any(|e| e["actor"] == "acme-scanner" && e["outcome"] == "started"),
        "the scanner's read is not on record: {reads:?}"
    );
    for actor in ["acme-ops", "acme-support", "hd-1"] {
        assert!(
            reads.iter().any(|e| e["actor"] == actor
                && e["tenant"] == "acme"
                && e["detail"].as_str().unwrap().contains(&id)
                && e["detail"].as_str().unwrap().contains("reason=ticket 9")),
            "no audited read by {actor}: {reads:?}"
        );
    }
}
