//! `[meta] kind = "postgres"` against a real PostgreSQL server (started on loopback by
//! scripts/test-servers.sh): a server keeps its jobs there across restarts, the schema is
//! versioned and migrated, and a database it cannot use is refused with a reason.

use std::path::PathBuf;

use crate::common::postgres::{
    database_with_login, fresh_database, fresh_database_with, psql, with_dbname,
};
use crate::common::*;
use quire_server::meta::postgres::MIGRATIONS;
use quire_server::meta::{MetaStore, PgMeta, PgTarget};

fn target(url: String) -> PgTarget {
    PgTarget {
        url,
        password: None,
        pool_size: 2,
        ca: None,
    }
}

fn open_error(t: &PgTarget) -> String {
    match PgMeta::open(t) {
        Ok(_) => panic!("the database was accepted"),
        Err(e) => e.to_string(),
    }
}

fn meta_toml(url: &str) -> String {
    format!("[meta]\nkind = \"postgres\"\nurl = \"{url}\"\n")
}

/// A pushed job is in PostgreSQL (the data directory holds no metadata file), survives a
/// kill -9 and restart, and reads back byte-identical.
#[test]
fn a_server_keeps_its_jobs_in_postgres_across_a_restart() {
    let url = fresh_database();
    let mut server = TestServer::start_with_config(&meta_toml(&url));
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    let job = server.push_ok(&samples, &["--no-progress"]);
    assert!(
        !server.path().join("quire-data/meta.redb").exists(),
        "the embedded store was created too"
    );
    assert!(
        server
            .log_text()
            .contains("a shred is final only once its backups are gone"),
        "no warning about the file vault's keys in the database"
    );
    let pages = walk(&samples).len();
    assert_eq!(
        psql(
            &url,
            &format!("SELECT count(*) FROM pages WHERE job = '{job}'")
        ),
        pages.to_string()
    );
    assert_eq!(
        psql(
            &url,
            &format!("SELECT committed, page_count FROM jobs WHERE job = '{job}'")
        ),
        format!("t|{pages}")
    );
    assert_eq!(
        psql(&url, "SELECT state FROM devices WHERE role = 'device'"),
        "enabled"
    );
    server.restart();
    let out = server.path().join("out");
    server.get_ok(&job, &out);
    same_files(&samples, &out);
}

#[test]
fn the_schema_is_versioned_and_migrates_once() {
    let url = fresh_database();
    // Four nodes starting together on an empty database: one migrates, the others wait for it.
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let t = target(url.clone());
            std::thread::spawn(move || PgMeta::open(&t).map(|m| m.schema_version().unwrap()))
        })
        .collect();
    for o in opened {
        assert_eq!(o.join().unwrap().unwrap(), MIGRATIONS.len());
    }
    assert_eq!(
        psql(&url, "SELECT count(*), max(version) FROM quire_schema"),
        format!("1|{}", MIGRATIONS.len())
    );
    // Rows written before a reopen are there after it.
    let m = PgMeta::open(&target(url.clone())).unwrap();
    m.create_tenant("acme").unwrap();
    drop(m);
    let m = PgMeta::open(&target(url.clone())).unwrap();
    assert!(m.tenant_exists("acme").unwrap());
}

/// A database at schema version 1 (as the first version with PostgreSQL left it) is migrated
/// on open, its rows kept and usable.
#[test]
fn a_version_1_database_is_migrated_with_its_rows() {
    let url = fresh_database();
    psql(&url, MIGRATIONS[0]);
    psql(
        &url,
        "CREATE TABLE quire_schema (version bigint NOT NULL); \
         INSERT INTO quire_schema VALUES (1); \
         INSERT INTO tenants VALUES ('acme'); \
         INSERT INTO devices VALUES ('d1', 'acme', 'device', 'enabled', decode(repeat('07', 32), 'hex'))",
    );
    let m = PgMeta::open(&target(url.clone())).unwrap();
    assert_eq!(m.schema_version().unwrap(), MIGRATIONS.len());
    let d = m.device("d1").unwrap().unwrap();
    assert_eq!((d.tenant.as_str(), d.secret_hash), ("acme", [7; 32]));
    m.set_device_state("d1", quire_codecs::wire::DeviceState::Disabled)
        .unwrap();
    assert_eq!(
        psql(
            &url,
            "SELECT state, last_change, change_seq > 0 FROM devices"
        ),
        "disabled|disabled|t"
    );
}

#[test]
fn a_database_a_newer_quire_wrote_is_refused() {
    let url = fresh_database();
    drop(PgMeta::open(&target(url.clone())).unwrap());
    psql(&url, "UPDATE quire_schema SET version = 999");
    let e = open_error(&target(url.clone()));
    assert!(e.contains("version 999") && e.contains("upgrade"), "{e}");
    assert_eq!(psql(&url, "SELECT version FROM quire_schema"), "999");
}

#[test]
fn a_database_that_is_not_utf8_is_refused() {
    let url = fresh_database_with("ENCODING 'SQL_ASCII' TEMPLATE template0");
    let e = open_error(&target(url));
    assert!(e.contains("SQL_ASCII") && e.contains("UTF8"), "{e}");
}

#[test]
fn an_unreachable_database_is_named() {
    let port = free_port();
    let e = open_error(&target(format!(
        "host=127.0.0.1 port={port} user=quire dbname=quire"
    )));
    assert!(
        e.contains(&format!(
            "cannot reach PostgreSQL at 127.0.0.1:{port}/quire"
        )),
        "{e}"
    );
}

/// Over TCP the test server asks for a password (SCRAM): the one in `password_file` works,
/// a wrong one is refused with PostgreSQL's own reason, and neither shows up in the log.
#[test]
fn the_password_comes_from_a_file_and_a_wrong_one_is_named() {
    let (dbname, role, secret) = database_with_login();
    let port = required_env("QUIRE_TEST_POSTGRES_PORT");
    let tcp = with_dbname(&format!("host=127.0.0.1 port={port} user={role}"), &dbname);

    let e = open_error(&target(tcp.clone()));
    assert!(e.contains("password"), "{e}");
    let wrong = PgTarget {
        password: Some("not-it".into()),
        ..target(tcp.clone())
    };
    let e = open_error(&wrong);
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("not-it"), "the password is in the message: {e}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg-password");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = TestServer::start_with_config(&format!(
        "{}password_file = \"{}\"\n",
        meta_toml(&tcp),
        file.display()
    ));
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    server.push_ok(&samples, &["--no-progress"]);
    assert!(
        !server.log_text().contains(&secret),
        "the password is logged"
    );
}

/// A data directory whose metadata is in the embedded store is not started on an empty
/// database, which would hide its jobs, devices and keys.
#[test]
fn a_data_directory_with_embedded_metadata_is_not_switched_silently() {
    let mut server = TestServer::start();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    server.push_ok(&samples, &["--no-progress"]);
    server.kill();
    let url = fresh_database();
    std::fs::write(
        server.path().join("quire.toml"),
        with_dev_bootstrap(&meta_toml(&url)),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config", "quire.toml", "--listen", "127.0.0.1:0"])
        .current_dir(server.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("meta.redb") && err.contains("not supported yet"),
        "{err}"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'jobs'"
        ),
        "0"
    );
}

/// The configuration refuses what cannot work before anything starts.
#[test]
fn the_meta_section_is_checked() {
    for (toml, says) in [
        ("[meta]\nkind = \"postgres\"\n", "meta.url"),
        (
            "[meta]\nkind = \"postgres\"\nurl = \"postgres://q:hunter2x@127.0.0.1/q\"\n",
            "holds a password",
        ),
        (
            "[meta]\nurl = \"postgres://q@127.0.0.1/q\"\n",
            "only applies to kind = \"postgres\"",
        ),
        (
            "[meta]\nca = \"/etc/quire/db-ca.pem\"\n",
            "only applies to kind = \"postgres\"",
        ),
        ("[meta]\nkind = \"sqlite\"\n", "not a metadata store"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("quire.toml"), toml).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["serve", "--config", "quire.toml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(says), "{toml}: {err}");
        assert!(!err.contains("hunter2x"), "{err}");
    }
}

/// Two nodes' keyrings on one database, first use of a tenant on eight threads at once:
/// one key version is made and every thread gets the same key; a rotation on one node is
/// found by the other; a shred on one is final for both.
#[test]
fn nodes_share_one_keyring_in_the_database() {
    use quire_pipeline::vault::KeyVault;
    use quire_pipeline::Keyring;
    let url = fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.key");
    let node = || {
        let meta = PgMeta::open(&target(url.clone())).unwrap();
        std::sync::Arc::new(Keyring::file_in(Box::new(meta.key_rings("file")), &master).unwrap())
    };
    let (a, b) = (node(), node());
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let ring = [a.clone(), b.clone()][i % 2].clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let (kek, key) = ring.current_kek("acme").unwrap();
                (kek.version, *key.expose())
            })
        })
        .collect();
    let keys: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(keys[0].0, 1);
    assert_eq!(psql(&url, "SELECT count(*) FROM key_rings"), "1");

    assert_eq!(a.rotate("acme").unwrap(), 2);
    let v2 = a.current_kek("acme").unwrap();
    let v1_ref = quire_codecs::sealed::KekRef {
        version: 1,
        ..v2.0.clone()
    };
    // Node B opens both versions under the same keys (a header naming version 2 sends it to
    // the database for the version it has not seen).
    let on_b = b.kek(&v2.0).unwrap();
    assert_eq!(on_b.expose(), v2.1.expose());
    assert_eq!(b.kek(&v1_ref).unwrap().expose(), &keys[0].1);
    assert_eq!(a.kek(&v1_ref).unwrap().expose(), &keys[0].1);
    a.shred("acme").unwrap();
    assert!(
        b.versions("acme").is_err(),
        "node B still reads the shredded tenant's keys"
    );
    assert_eq!(psql(&url, "SELECT count(*) FROM key_rings"), "0");
    // A third node starting now does not bring the tenant back.
    let c = node();
    assert!(c.current_kek("acme").is_err());
}

/// The database going away (its connections cut, then no new ones allowed) makes a push fail
/// with a retryable refusal that says it is the server's side (not hang, not "internal"); once it takes connections again the same server pushes again,
/// with no restart (the pool replaces the broken connections).
#[test]
fn a_node_rides_out_the_database_going_away() {
    let url = fresh_database();
    let server = TestServer::start_with_config(&meta_toml(&url));
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/scan-job");
    server.push_ok(&samples, &["--no-progress"]);
    let dbname = url.rsplit("dbname=").next().unwrap().to_string();
    let maintenance = with_dbname(&url, "postgres");
    let cut = |allow: bool| {
        psql(
            &maintenance,
            &format!("ALTER DATABASE {dbname} ALLOW_CONNECTIONS {allow}"),
        );
        psql(
            &maintenance,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{dbname}'"
            ),
        );
    };
    cut(false);
    let out = server.quire(&["push", samples.to_str().unwrap(), "--no-progress"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pushed without a database");
    // The scanner is told it is not its fault; the operator's log names the database.
    assert!(
        err.contains("metadata store is unavailable") && err.contains("retry later"),
        "{err}"
    );
    let log = server.log_text();
    assert!(log.contains("PostgreSQL"), "{log}");
    cut(true);
    server.push_ok(&samples, &["--no-progress"]);
}
