//! Databases on the real PostgreSQL server `scripts/test-servers.sh` starts: one fresh
//! database per test, so tests run in parallel without seeing each other's rows.

use std::process::Command;

use super::required_env;

/// The connection string of the test server's maintenance database.
pub fn server_url() -> String {
    required_env("QUIRE_TEST_POSTGRES_URL")
}

/// Runs `sql` with psql against the database `url` names; panics with psql's message.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("psql runs (postgresql-15, installed by scripts/test-servers.sh)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Creates an empty database (`extra`: more of CREATE DATABASE's options) and returns the
/// connection string that names it.
pub fn fresh_database_with(extra: &str) -> String {
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).unwrap();
    let name = format!("quire_test_{}", hex::encode(r));
    let server = server_url();
    psql(&server, &format!("CREATE DATABASE {name} {extra}"));
    with_dbname(&server, &name)
}

/// A fresh UTF-8 database.
pub fn fresh_database() -> String {
    fresh_database_with("")
}

/// `url` (a key=value connection string) naming database `name` instead.
pub fn with_dbname(url: &str, name: &str) -> String {
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|kv| !kv.starts_with("dbname="))
        .collect();
    format!("{} dbname={name}", kept.join(" "))
}

/// A fresh database and a role that logs in to it over TCP with a password (SCRAM) and owns
/// its schema: the database's name, the role and the password.
pub fn database_with_login() -> (String, String, String) {
    let url = fresh_database();
    let dbname = url.rsplit("dbname=").next().unwrap().to_string();
    let role = format!("r_{dbname}");
    let secret = format!("pw-{}", &dbname[dbname.len() - 8..]);
    psql(
        &url,
        &format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{secret}'; \
             GRANT ALL ON DATABASE {dbname} TO {role}; ALTER SCHEMA public OWNER TO {role}"
        ),
    );
    (dbname, role, secret)
}
