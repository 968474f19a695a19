#!/usr/bin/env bash
# Several ingest nodes under one load, on this machine: NODES `quire serve` processes sharing a
# throwaway PostgreSQL cluster (scripts/postgres.sh), one local object store, one master key
# and one certificate (the first node's development ones), each with a data directory of its
# own, all on loopback; then `quire-loadtest --server A,B,…` pushes at them and prints its JSON
# report, whose `nodes` gives each node's part. Everything is removed at the end.
#
# Build first: cargo build --release --bin quire -p quire-loadtest
# Usage: loadtest/nodes.sh [NODES] [quire-loadtest arguments…]
#   e.g. loadtest/nodes.sh 3 --corpus ../shared/corpus/jobs --scanners 6 --duration 10
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-3}
shift || true
bin=$PWD/target/release
for b in quire quire-loadtest; do
  [ -x "$bin/$b" ] || { echo "build first: cargo build --release --bin quire -p quire-loadtest" >&2; exit 1; }
done

source scripts/postgres.sh
start_postgres
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_postgres
  rm -rf "$work"
}
trap cleanup EXIT

psql "$QUIRE_PG_URL" -qc "CREATE DATABASE quire_nodes"
url="host=$QUIRE_PG_DIR port=$QUIRE_PG_PORT user=quire dbname=quire_nodes"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
first=$work/node1/quire-data
servers=()
for i in $(seq 1 "$nodes"); do
  dir=$work/node$i
  mkdir -p "$dir"
  if [ "$i" = 1 ]; then
    printf '[meta]\nkind = "postgres"\nurl = "%s"\n[dev]\nbootstrap = true\n' "$url" >"$dir/quire.toml"
  else
    printf '[meta]\nkind = "postgres"\nurl = "%s"\n[dev]\nbootstrap = false\n[tls]\ncert = "%s"\nkey = "%s"\n[vault]\nmaster_key = "%s"\nallow_master_key_in_data_dir = true\n[store]\nkind = "local"\npath = "%s"\n' \
      "$url" "$first/tls/dev-cert.pem" "$first/tls/dev-key.pem" "$first/vault/master.key" "$first/store" >"$dir/quire.toml"
  fi
  port=$(free_port)
  (cd "$dir" && exec "$bin/quire" serve --config quire.toml --listen "127.0.0.1:$port" >serve.out 2>serve.log) &
  pids+=($!)
  # The next node needs this one's certificate and key; every node must answer before the load.
  for _ in $(seq 1 200); do
    grep -q "quire listening on" "$dir/serve.out" 2>/dev/null && break
    sleep 0.05
  done
  grep -q "quire listening on" "$dir/serve.out" || { echo "node $i did not start:" >&2; cat "$dir/serve.log" >&2; exit 1; }
  servers+=("127.0.0.1:$port")
done
list=$(IFS=,; echo "${servers[*]}")
echo "nodes: $list" >&2
"$bin/quire-loadtest" --server "$list" --credential "$first/dev/device.cred" "$@"
