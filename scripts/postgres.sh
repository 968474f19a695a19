# Sourced: `start_postgres` starts a throwaway PostgreSQL cluster (Debian postgresql-15,
# installed if missing) in a fresh directory under target/, listening on a Unix socket there
# and on a free loopback port, and exports QUIRE_PG_DIR, QUIRE_PG_PORT and QUIRE_PG_URL (the
# socket, as the trusted superuser `quire`, database `postgres`); `stop_postgres` stops it
# and removes the directory. initdb refuses to run as root, so the cluster belongs to the
# postgres user when we are root. pg_stat_statements is loaded, for counting round trips.
pg_bin=/usr/lib/postgresql/15/bin

as_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
fi

start_postgres() {
  if [ ! -x "$pg_bin/initdb" ]; then
    apt-get update -qq >/dev/null && apt-get install -y -qq postgresql-15 >/dev/null
  fi
  mkdir -p target
  QUIRE_PG_DIR=$(mktemp -d "$PWD/target/postgres.XXXXXX")
  chmod 755 "$QUIRE_PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$QUIRE_PG_DIR"; fi
  QUIRE_PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg "$pg_bin/initdb" -D "$QUIRE_PG_DIR/data" -U quire -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  as_pg "$pg_bin/pg_ctl" -D "$QUIRE_PG_DIR/data" -l "$QUIRE_PG_DIR/server.log" -w -t 60 \
    -o "-k $QUIRE_PG_DIR -p $QUIRE_PG_PORT -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_preload_libraries=pg_stat_statements" \
    start >/dev/null
  QUIRE_PG_URL="host=$QUIRE_PG_DIR port=$QUIRE_PG_PORT user=quire dbname=postgres"
  export QUIRE_PG_DIR QUIRE_PG_PORT QUIRE_PG_URL
}

stop_postgres() {
  [ -n "${QUIRE_PG_DIR:-}" ] || return 0
  as_pg "$pg_bin/pg_ctl" -D "$QUIRE_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$QUIRE_PG_DIR"
}
