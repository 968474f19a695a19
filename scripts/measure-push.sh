#!/usr/bin/env bash
# Measures `quire push` of a corpus on loopback with release builds: starts a server in a
# temporary directory, pushes every job folder of the corpus in one `push` (one connection),
# repeats ROUNDS times, and prints pages/s and MB/s of each round (wall clock of the whole
# command, including the client's hashing pass and the job commits).
# Usage: scripts/measure-push.sh [CORPUS_JOBS_DIR] [ROUNDS] [ACK]   (ACK: stored | spooled)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
corpus=${1:-$root/../shared/corpus/jobs}
rounds=${2:-5}
ack=${3:-stored}
cargo build --release --quiet --bin quire
quire="$root/target/release/quire"
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
printf '[dev]\nbootstrap = true\n[spool]\nack = "%s"\n' "$ack" > quire.toml
"$quire" serve --config quire.toml --listen 127.0.0.1:0 > serve.out 2> serve.log &
server=$!
for _ in $(seq 1 100); do grep -q "quire listening" serve.out 2>/dev/null && break; sleep 0.1; done
jobs=("$corpus"/*/)
pages=$(find "${jobs[@]}" -maxdepth 1 -type f | wc -l)
bytes=$(find "${jobs[@]}" -maxdepth 1 -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
echo "corpus: ${#jobs[@]} jobs, $pages pages, $bytes bytes; ack = $ack"
for r in $(seq 1 "$rounds"); do
  t0=$(date +%s.%N)
  "$quire" push --no-progress --state-dir "state-$r" "${jobs[@]}" > /dev/null 2> push.log
  t1=$(date +%s.%N)
  awk -v p="$pages" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v r="$r" \
    'BEGIN { s = t1 - t0; printf "round %d: %.3f s, %.1f pages/s, %.1f MB/s\n", r, s, p / s, b / s / 1e6 }'
done
