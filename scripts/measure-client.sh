#!/usr/bin/env bash
# Measures what `quire push` costs the scanner: CPU (user + system) per MB and the bytes it
# reads, pushing a corpus to a release server on loopback (memory store, so the server's disk
# stays out of it). Server on core 0, the push on core 1. With OTHER=path/to/another/quire
# (an older build, say) each round runs that client too, alternating, against the same server.
# Usage: [OTHER=…] scripts/measure-client.sh [CORPUS_JOBS_DIR] [ROUNDS] [COPIES]
#        (the corpus is copied COPIES times, default 8, so each push lasts long enough to time)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
corpus=${1:-$root/../shared/corpus/jobs}
rounds=${2:-3}
copies=${3:-8}
cargo build --release --quiet --bin quire
quire="$root/target/release/quire"
work=$(mktemp -d)
server=""
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/jobs"
for c in $(seq 1 "$copies"); do
  for d in "$corpus"/*/; do cp -r "$d" "$work/jobs/$(basename "$d")-$c"; done
done
jobs=("$work"/jobs/*/)
bytes=$(find "${jobs[@]}" -maxdepth 1 -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
find "$work/jobs" -type f -exec cat {} + > /dev/null # into the page cache
printf '[dev]\nbootstrap = true\n[store]\nkind = "memory"\n' > "$work/quire.toml"
cd "$work"
taskset -c 0 "$quire" serve --config quire.toml --listen 127.0.0.1:0 > serve.out 2> serve.log &
server=$!
for _ in $(seq 1 100); do grep -q "quire listening" serve.out 2>/dev/null && break; sleep 0.1; done
echo "corpus: ${#jobs[@]} jobs, $bytes bytes"
n=0
for r in $(seq 1 "$rounds"); do
  for client in "$quire" ${OTHER:+"$OTHER"}; do
    n=$((n + 1))
    /usr/bin/time -f "%U %S %e" -o time.txt taskset -c 1 "$client" push --no-progress \
      --state-dir "state-$n" "${jobs[@]}" > /dev/null 2> push.log &
    pid=$!
    # Bytes read so far, sampled until the push ends (so: at least this many).
    read_bytes=0
    while kill -0 "$pid" 2>/dev/null; do
      for p in $(pgrep -P "$pid" 2>/dev/null) "$pid"; do
        r_now=$(awk '/^rchar/ {print $2}' "/proc/$p/io" 2>/dev/null || true)
        [ -n "$r_now" ] && [ "$r_now" -gt "$read_bytes" ] && read_bytes=$r_now
      done
      sleep 0.02
    done
    wait "$pid" || { cat push.log; exit 1; }
    read -r user sys elapsed < time.txt
    awk -v c="$client" -v u="$user" -v s="$sys" -v e="$elapsed" -v b="$bytes" -v rd="$read_bytes" \
      'BEGIN { printf "%s: %.1f MB/s, %.2f client CPU-ms per MB, read at least %.1f MB\n", c, b / e / 1e6, (u + s) * 1000 / (b / 1e6), rd / 1e6 }'
  done
done
