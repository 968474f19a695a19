//! `[meta] ca`: a node reaches PostgreSQL over TLS, checking the server's certificate against
//! that CA and the host name; a certificate from another CA, or for another name, is refused
//! with the reason, and a database across a network without TLS is refused before connecting.

use crate::common::postgres::{database_with_login, psql, with_dbname};
use crate::common::*;
use quire_server::meta::{PgMeta, PgTarget};

fn target(url: String, password: &str, ca: Option<std::path::PathBuf>) -> PgTarget {
    PgTarget {
        url,
        password: Some(password.into()),
        pool_size: 2,
        ca,
    }
}

fn open_error(t: &PgTarget) -> String {
    match PgMeta::open(t) {
        Ok(_) => panic!("the database was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn with_a_ca_every_connection_is_tls_and_the_certificate_is_checked() {
    let (dbname, role, secret) = database_with_login();
    let port = required_env("QUIRE_TEST_POSTGRES_PORT");
    let ca = std::path::PathBuf::from(required_env("QUIRE_TEST_POSTGRES_CA"));
    let by_name = with_dbname(&format!("host=localhost port={port} user={role}"), &dbname);

    let meta = PgMeta::open(&target(by_name.clone(), &secret, Some(ca.clone()))).unwrap();
    assert!(meta.schema_version().unwrap() > 0);
    let maintenance = server_url_for(&dbname);
    let plain = psql(
        &maintenance,
        &format!(
            "SELECT count(*) FILTER (WHERE NOT s.ssl) || '/' || count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'quire' AND a.usename = '{role}'"
        ),
    );
    let (clear, all) = plain.split_once('/').unwrap();
    assert_eq!(clear, "0", "connections without TLS: {plain}");
    assert!(all.parse::<u32>().unwrap() >= 1, "{plain}");
    drop(meta);

    // A CA that did not issue the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
    let e = open_error(&target(by_name.clone(), &secret, Some(other)));
    assert!(
        e.contains("UnknownIssuer") || e.contains("unknown issuer"),
        "{e}"
    );

    // The right CA, a name the certificate is not for (the same server, by its address).
    let by_other_name = with_dbname(
        &format!("host=db.invalid hostaddr=127.0.0.1 port={port} user={role}"),
        &dbname,
    );
    let e = open_error(&target(by_other_name, &secret, Some(ca.clone())));
    assert!(e.to_lowercase().contains("not valid for name"), "{e}");

    // A file that holds no certificate, a missing one, and TLS asked of a Unix socket.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = open_error(&target(by_name.clone(), &secret, Some(junk)));
    assert!(e.contains("[meta] ca") && e.contains("certificate"), "{e}");
    let e = open_error(&target(by_name, &secret, Some(dir.path().join("none.pem"))));
    assert!(e.contains("[meta] ca") && e.contains("none.pem"), "{e}");
    let socket = required_env("QUIRE_TEST_POSTGRES_URL");
    let e = open_error(&target(with_dbname(&socket, &dbname), &secret, Some(ca)));
    assert!(e.contains("Unix socket"), "{e}");
}

#[test]
fn across_a_network_without_tls_is_refused_before_connecting() {
    let e = open_error(&PgTarget {
        url: "postgres://quire@db.example.net:5432/quire".into(),
        password: None,
        pool_size: 1,
        ca: None,
    });
    assert!(
        e.contains("across a network") && e.contains("[meta] ca"),
        "{e}"
    );
}

/// The maintenance connection string (the trusted socket) naming `dbname`.
fn server_url_for(dbname: &str) -> String {
    with_dbname(&required_env("QUIRE_TEST_POSTGRES_URL"), dbname)
}
