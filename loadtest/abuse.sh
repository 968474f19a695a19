#!/usr/bin/env bash
# How a legitimate scanner's throughput holds while another process floods the server with
# bad handshakes. Starts a release server on loopback, runs the scanner load alone, then again
# with `quire-loadtest --hammer` running beside it, and prints both and their ratio.
# Usage: loadtest/abuse.sh [HAMMER_TASKS] [CORPUS_JOBS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tasks=${1:-32}
corpus=${2:-$root/../shared/corpus/jobs}
cargo build --release --quiet -p quire -p quire-loadtest
bin="$root/target/release"
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
"$bin/quire" serve --listen 127.0.0.1:0 > serve.out 2> serve.log &
server=$!
for _ in $(seq 1 100); do grep -q "quire listening" serve.out 2>/dev/null && break; sleep 0.1; done
addr=$(head -n 1 serve.out | awk '{print $4}')
load() {
  "$bin/quire-loadtest" --server "$addr" --credential quire-data/dev/device.cred \
    --corpus "$corpus" --scanners 2 --jobs 14 --concurrency 4 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["mb_per_s"], r["pages_per_s"], r["latency_ms"]["p99"], r["verified"])'
}
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
c0=$(cpu "$server")
read -r base_mb base_pages base_p99 base_ok <<< "$(load)"
c1=$(cpu "$server")
"$bin/quire-loadtest" --hammer "$tasks" --hammer-seconds 20 --server "$addr" --credential quire-data/dev/device.cred > hammer.json 2>/dev/null &
hammer=$!
sleep 2
c2=$(cpu "$server")
read -r ham_mb ham_pages ham_p99 ham_ok <<< "$(load)"
c3=$(cpu "$server")
wait "$hammer"
c4=$(cpu "$server")
echo "alone:         $base_mb MB/s, $base_pages pages/s, p99 $base_p99 ms, verified $base_ok"
echo "under hammer:  $ham_mb MB/s, $ham_pages pages/s, p99 $ham_p99 ms, verified $ham_ok"
echo "hammer:        $(cat hammer.json) ($tasks tasks, bad secrets)"
awk -v c0="$c0" -v c1="$c1" -v c2="$c2" -v c3="$c3" -v c4="$c4" 'BEGIN {
  printf "server CPU:    %.2f s for the load alone; %.2f s for the load under the hammer; %.2f s from the hammer start to its end\n", c1 - c0, c3 - c2, c4 - c1 }'
python3 -c "print(f'throughput kept under the flood: {float(\"$ham_mb\") / float(\"$base_mb\") * 100:.0f} %')"
