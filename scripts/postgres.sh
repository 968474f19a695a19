# Sourced: `start_postgres` starts a throwaway PostgreSQL cluster (Debian postgresql-15,
# installed if missing) in a fresh directory under target/, listening on a Unix socket there
# and on a free loopback port (with TLS: a throwaway CA's certificate for localhost and
# 127.0.0.1), and exports QUIRE_PG_DIR, QUIRE_PG_PORT, QUIRE_PG_CA (that CA, PEM) and
# QUIRE_PG_URL (the socket, as the trusted superuser `quire`, database `postgres`);
# `stop_postgres` stops it
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
  if ! command -v openssl >/dev/null; then
    apt-get update -qq >/dev/null && apt-get install -y -qq openssl >/dev/null
  fi
  mkdir -p target
  QUIRE_PG_DIR=$(mktemp -d "$PWD/target/postgres.XXXXXX")
  chmod 755 "$QUIRE_PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$QUIRE_PG_DIR"; fi
  QUIRE_PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg "$pg_bin/initdb" -D "$QUIRE_PG_DIR/data" -U quire -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  local tls="$QUIRE_PG_DIR/tls"
  mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj "/CN=Quire test database CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$tls/ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 7 -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
  chmod 600 "$tls/server.key"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$tls"; fi
  as_pg "$pg_bin/pg_ctl" -D "$QUIRE_PG_DIR/data" -l "$QUIRE_PG_DIR/server.log" -w -t 60 \
    -o "-k $QUIRE_PG_DIR -p $QUIRE_PG_PORT -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_preload_libraries=pg_stat_statements -c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key" \
    start >/dev/null
  QUIRE_PG_URL="host=$QUIRE_PG_DIR port=$QUIRE_PG_PORT user=quire dbname=postgres"
  QUIRE_PG_CA="$tls/ca.pem"
  export QUIRE_PG_DIR QUIRE_PG_PORT QUIRE_PG_URL QUIRE_PG_CA
}

stop_postgres() {
  [ -n "${QUIRE_PG_DIR:-}" ] || return 0
  as_pg "$pg_bin/pg_ctl" -D "$QUIRE_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$QUIRE_PG_DIR"
}
