#!/usr/bin/env bash
# Quire's main job on its embedded defaults, start to finish: build, start `quire serve`
# (local store, generated development certificate, development tenant and scanner), push the
# bundled sample job, fetch it back, check it is byte-identical, and show the sealed objects.
# Everything happens under target/quickstart/; the only thing outside the checkout is the
# server's spool key directory in RAM (/dev/shm), which it removes when it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cargo build --release --quiet --bin quire
quire="$root/target/release/quire"
work="$root/target/quickstart"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

echo "== quire serve (embedded defaults: 127.0.0.1:4433, ./quire-data)"
"$quire" serve > serve.out 2> serve.log &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "quire listening" serve.out 2>/dev/null && break
  if ! kill -0 "$server" 2>/dev/null; then
    echo "quire serve exited:"; cat serve.log; exit 1
  fi
  sleep 0.1
done
cat serve.out

echo
echo "== quire push samples/scan-job"
job=$("$quire" push "$root/samples/scan-job" | tail -n 1)
echo "job id: $job"

echo
echo "== quire get --job $job --out restored"
"$quire" get --job "$job" --out restored

echo
echo "== byte-identical?"
diff -r "$root/samples/scan-job" restored && echo "yes: every page matches the original"

echo
echo "== the sealed objects (AES-256-GCM, per-object data key wrapped by the tenant key)"
find "quire-data/store/tenants/dev/jobs/$job" -type f -printf '%10s bytes  %p\n' | sort -k3
first=$(find "quire-data/store/tenants/dev/jobs/$job/pages" -type f | sort | head -n 1)
echo "first 64 bytes of $first:"
od -A x -t x1z -N 64 "$first"
echo
echo "done: server log in $work/serve.log, data in $work/quire-data"
