//! The PostgreSQL schema, as numbered migrations applied in order at start-up.
//!
//! `quire_schema` holds one row: the version the database is at. A node applies what it
//! knows beyond that, under an advisory lock so that nodes starting together take turns,
//! each migration in the transaction that records it. A database at a version newer than
//! this build knows is refused rather than guessed at: the newer node may have changed a
//! meaning this one would get wrong. The tables are described in docs/METADATA.md.

use deadpool_postgres::Object;

use super::pg;
use crate::meta::MetaError;

/// Every migration, in order; the database's version is how many of them it has.
/// Append only: a landed migration is never changed, since databases already ran it.
pub const MIGRATIONS: &[&str] = &[
    // 1: the tables the embedded store keeps, as relations.
    r#"
    CREATE TABLE tenants (
        tenant       text PRIMARY KEY
    );
    CREATE TABLE devices (
        device_id    text PRIMARY KEY,
        tenant       text NOT NULL,
        role         text NOT NULL,
        state        text NOT NULL,
        secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32)
    );
    CREATE INDEX devices_by_tenant ON devices (tenant);
    CREATE TABLE enrollment_tokens (
        token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
        tenant       text NOT NULL,
        expires_unix bigint NOT NULL,
        used         boolean NOT NULL
    );
    CREATE TABLE support_grants (
        tenant       text NOT NULL,
        partner      text NOT NULL,
        expires_unix bigint NOT NULL,
        reason       text NOT NULL,
        granted_by   text NOT NULL,
        PRIMARY KEY (tenant, partner)
    );
    CREATE TABLE jobs (
        tenant         text NOT NULL,
        job            text NOT NULL,
        committed      boolean NOT NULL DEFAULT false,
        page_count     bigint NOT NULL DEFAULT 0,
        bytes          bigint NOT NULL DEFAULT 0,
        committed_unix bigint NOT NULL DEFAULT 0,
        delivered_unix bigint,
        deleted_unix   bigint,
        owner          text,
        created_unix   bigint NOT NULL DEFAULT 0,
        upload         text,
        PRIMARY KEY (tenant, job)
    );
    CREATE TABLE pages (
        tenant       text NOT NULL,
        job          text NOT NULL,
        idx          bigint NOT NULL,
        name         text NOT NULL,
        size         bigint NOT NULL,
        sha256       bytea NOT NULL CHECK (length(sha256) = 32),
        object_key   text NOT NULL,
        stored_bytes bigint NOT NULL,
        upload       text,
        PRIMARY KEY (tenant, job, idx)
    );
    CREATE TABLE legal_holds (
        tenant       text NOT NULL,
        job          text NOT NULL,  -- '' holds the whole tenant
        reason       text NOT NULL,
        held_by      text NOT NULL,
        since_unix   bigint NOT NULL,
        PRIMARY KEY (tenant, job)
    );
    CREATE TABLE kek_versions (
        tenant       text PRIMARY KEY,
        versions     bigint NOT NULL
    );
    "#,
    // 2: device changes numbered, so that every node learns of a disable, revoke or new
    // secret (LISTEN/NOTIFY wakes them; the numbers let one that missed a notification
    // catch up).
    r#"
    CREATE SEQUENCE device_changes;
    ALTER TABLE devices ADD COLUMN change_seq bigint NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN last_change text NOT NULL DEFAULT '';
    CREATE INDEX devices_by_change ON devices (change_seq);
    "#,
    // 3: the vault's wrapped tenant keys, shared by the nodes (one keyring per vault backend,
    // as the data directory had one folder per backend).
    r#"
    CREATE TABLE key_rings (
        backend      text NOT NULL,
        tenant       text NOT NULL,
        version      bigint NOT NULL CHECK (version >= 1),
        wrapped      bytea,  -- NULL once retired
        PRIMARY KEY (backend, tenant, version)
    );
    CREATE TABLE key_rings_shredded (
        backend      text NOT NULL,
        tenant       text NOT NULL,
        PRIMARY KEY (backend, tenant)
    );
    "#,
    // 4: the audit trail, one chain per tenant whichever node writes (the head row's lock
    // orders the appends); records are append-only.
    r#"
    CREATE TABLE audit_heads (
        tenant       text PRIMARY KEY,
        seq          bigint NOT NULL CHECK (seq >= 0),
        hash         bytea NOT NULL,
        signed_seq   bigint NOT NULL
    );
    CREATE TABLE audit_records (
        tenant       text NOT NULL,
        seq          bigint NOT NULL CHECK (seq >= 1),
        line         text NOT NULL,
        PRIMARY KEY (tenant, seq)
    );
    CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit records are append-only';
    END
    $$;
    CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
    "#,
    // 5: what each node claims of each rate limit, renewed every second (see
    // server/src/limits/shares.rs); short-lived, so not written to the WAL.
    r#"
    CREATE UNLOGGED TABLE limit_claims (
        node         text NOT NULL,
        key          text NOT NULL,
        per_sec      double precision NOT NULL,
        updated      timestamptz NOT NULL,
        PRIMARY KEY (node, key)
    );
    "#,
    // 6: every change to a tenant's keys (a new version, a retirement, a shred) numbered and
    // announced, so other nodes drop their cached keys at once (meta/postgres/watch.rs).
    r#"
    CREATE TABLE key_changes (
        seq          bigserial PRIMARY KEY,
        backend      text NOT NULL,
        tenant       text NOT NULL
    );
    CREATE FUNCTION key_ring_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed record;
    BEGIN
        IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
        INSERT INTO key_changes (backend, tenant) VALUES (changed.backend, changed.tenant);
        PERFORM pg_notify('quire_keys', '');
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER key_rings_changed AFTER INSERT OR UPDATE OR DELETE ON key_rings
        FOR EACH ROW EXECUTE FUNCTION key_ring_changed();
    CREATE TRIGGER key_rings_shredded_changed AFTER INSERT ON key_rings_shredded
        FOR EACH ROW EXECUTE FUNCTION key_ring_changed();
    "#,
];

/// An arbitrary constant naming the lock nodes take while migrating.
const MIGRATION_LOCK: i64 = 0x5155_4952_455f_4d31; // "QUIRE_M1"

/// Brings the database to [`MIGRATIONS`]' version; returns the version it was at.
pub(super) async fn migrate(client: &mut Object) -> Result<usize, MetaError> {
    let encoding: String = client
        .query_one("SHOW server_encoding", &[])
        .await
        .map_err(pg)?
        .get(0);
    if encoding != "UTF8" {
        return Err(MetaError::Db(format!(
            "the database's encoding is {encoding}; Quire stores names as UTF-8 and needs a \
             database created with ENCODING 'UTF8'"
        )));
    }
    let txn = client.transaction().await.map_err(pg)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS quire_schema (version bigint NOT NULL)")
        .await
        .map_err(pg)?;
    let row = txn
        .query_opt("SELECT version FROM quire_schema", &[])
        .await
        .map_err(pg)?;
    let was = match row {
        Some(r) => r.get::<_, i64>(0) as usize,
        None => {
            txn.execute("INSERT INTO quire_schema (version) VALUES (0)", &[])
                .await
                .map_err(pg)?;
            0
        }
    };
    if was > MIGRATIONS.len() {
        return Err(MetaError::Db(format!(
            "the PostgreSQL metadata schema is at version {was}, newer than this quire knows \
             ({}): a newer quire has used this database; upgrade this node rather than \
             running an older one against it",
            MIGRATIONS.len()
        )));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(was) {
        txn.batch_execute(sql).await.map_err(|e| {
            MetaError::Db(format!(
                "applying metadata schema migration {}: {}",
                n + 1,
                describe(&e)
            ))
        })?;
    }
    txn.execute(
        "UPDATE quire_schema SET version = $1",
        &[&(MIGRATIONS.len() as i64)],
    )
    .await
    .map_err(pg)?;
    txn.commit().await.map_err(pg)?;
    Ok(was)
}

/// A PostgreSQL error with the server's own message where there is one.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}
