#!/usr/bin/env bash
# Measures `quire push` of a corpus on loopback with release builds: starts a server in a
# temporary directory, pushes every job folder of the corpus in one `push` (one connection),
# repeats ROUNDS times, and prints pages/s and MB/s of each round (wall clock of the whole
# command, including the client's hashing pass and the job commits).
# With META=postgres the metadata goes to a throwaway PostgreSQL cluster (scripts/postgres.sh)
# and each round also prints, per page, the statements the server ran (pg_stat_statements:
# one round trip each), the transactions it committed and the WAL syncs (fsyncs) they cost.
# With REPLICA=1 the dev tenant keeps a second copy in a local replica store (another
# directory, fsync'd like the primary).
# Usage: [META=redb|postgres] [REPLICA=1] scripts/measure-push.sh [CORPUS_JOBS_DIR] [ROUNDS] [ACK]
#        (ACK: stored | spooled | replicated)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
corpus=${1:-$root/../shared/corpus/jobs}
rounds=${2:-5}
ack=${3:-stored}
cargo build --release --quiet --bin quire
quire="$root/target/release/quire"
meta=${META:-redb}
source scripts/postgres.sh
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; stop_postgres' EXIT
printf '[dev]\nbootstrap = true\n[spool]\nack = "%s"\n' "$ack" > "$work/quire.toml"
if [ "${REPLICA:-0}" = 1 ]; then
  printf '[store]\nresidency = "eu"\n[stores.replica]\nkind = "local"\npath = "%s/replica"\nresidency = "eu"\n[tenants.dev]\nresidency = "eu"\nreplicas = ["replica"]\n' "$work" >> "$work/quire.toml"
fi
if [ "$meta" = postgres ]; then
  start_postgres
  psql "$QUIRE_PG_URL" -qc "CREATE DATABASE quire"
  db="host=$QUIRE_PG_DIR port=$QUIRE_PG_PORT user=quire dbname=quire"
  psql "$db" -qc "CREATE EXTENSION pg_stat_statements"
  printf '[meta]\nkind = "postgres"\nurl = "%s"\n' "$db" >> "$work/quire.toml"
fi
# Statements, commits and WAL syncs so far (the measuring queries add a handful per round).
pg_counts() {
  psql "$db" -At -F ' ' -c "SELECT (SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat%'), (SELECT xact_commit FROM pg_stat_database WHERE datname = 'quire'), (SELECT wal_sync FROM pg_stat_wal)"
}
cd "$work"
"$quire" serve --config quire.toml --listen 127.0.0.1:0 > serve.out 2> serve.log &
server=$!
for _ in $(seq 1 100); do grep -q "quire listening" serve.out 2>/dev/null && break; sleep 0.1; done
jobs=("$corpus"/*/)
pages=$(find "${jobs[@]}" -maxdepth 1 -type f | wc -l)
bytes=$(find "${jobs[@]}" -maxdepth 1 -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
echo "corpus: ${#jobs[@]} jobs, $pages pages, $bytes bytes; ack = $ack; metadata in $meta"
for r in $(seq 1 "$rounds"); do
  [ "$meta" = postgres ] && before=$(pg_counts)
  t0=$(date +%s.%N)
  "$quire" push --no-progress --state-dir "state-$r" "${jobs[@]}" > /dev/null 2> push.log
  t1=$(date +%s.%N)
  awk -v p="$pages" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v r="$r" \
    'BEGIN { s = t1 - t0; printf "round %d: %.3f s, %.1f pages/s, %.1f MB/s\n", r, s, p / s, b / s / 1e6 }'
  if [ "$meta" = postgres ]; then
    sleep 1 # statistics reach the views within PGSTAT's flush interval
    read -r s0 c0 w0 <<< "$before"
    read -r s1 c1 w1 <<< "$(pg_counts)"
    awk -v p="$pages" -v s=$((s1 - s0)) -v c=$((c1 - c0)) -v w=$((w1 - w0)) \
      'BEGIN { printf "  postgres per page: %.2f statements, %.2f commits, %.2f WAL syncs\n", s / p, c / p, w / p }'
    [ -n "${SHOW_STATEMENTS:-}" ] && psql "$db" -c "SELECT calls, left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat%' ORDER BY calls DESC LIMIT 15"
    psql "$db" -Atqc "SELECT pg_stat_statements_reset()" > /dev/null
  fi
done
