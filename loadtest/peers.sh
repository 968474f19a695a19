#!/usr/bin/env bash
# Peer comparison, all in one run on this machine: the same page images stored encrypted
#   - by rclone into a crypt remote over a local directory (local disk to local disk),
#   - by restic backup into a local repository,
#   - by tar | zstd -1 | age into one local file,
#   - by Quire: quire-loadtest pushing them over QUIC (loopback) to a child `quire serve`
#     with the local store (ack = "stored": each page fsync'd in the store before its ack),
# and prints each one's MB/s and Quire's ratio to it. The raw quinn bulk-upload ceiling is
# measured in the same run (`--transport-ceiling`).
#
# PIN=1 measures on separate cores instead of sharing both: every peer runs on core 0 alone,
# Quire's server on core 0 and its scanners on core 1 (`taskset`), and each line also gives
# CPU-ms per MB (the peer's whole process tree; for Quire the server's alone, which is what an
# operator buys cores for). A tracking figure, not a target.
#
# The data: the corpus (../shared/corpus/jobs) copied COPIES times (default 33, ~500 MB).
# Needs rclone, restic, age and zstd (Debian packages; installed with apt-get when missing).
# Usage: loadtest/peers.sh [CORPUS_JOBS_DIR] [COPIES] [SCANNERS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
corpus=${1:-$root/../shared/corpus/jobs}
copies=${2:-33}
scanners=${3:-4}

missing=()
for tool in rclone restic age zstd; do command -v "$tool" > /dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" > /dev/null
fi
cargo build --release --quiet --bin quire
cargo build --release --quiet -p quire-loadtest

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/src"
mkdir -p "$src"
for i in $(seq 1 "$copies"); do
  for job in "$corpus"/*/; do
    cp -r "$job" "$src/c$i-$(basename "$job")"
  done
done
bytes=$(find "$src" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
jobs=$(find "$src" -mindepth 1 -maxdepth 1 -type d | wc -l)
echo "data: $jobs jobs, $bytes bytes (corpus x $copies); every tool reads it from the page cache"
cat "$src"/*/* > /dev/null
sync

now() { date +%s.%N; }
rate() { awk -v b="$bytes" -v t0="$1" -v t1="$2" 'BEGIN { printf "%.1f", b / (t1 - t0) / 1e6 }'; }
pin=()
[ "${PIN:-0}" = 1 ] && pin=(taskset -c 0)
# Runs a shell command line (on core 0 with PIN=1); `cpu` then prints its CPU-ms per MB.
measured() {
  local TIMEFORMAT='%3U %3S'
  { time "${pin[@]}" bash -c "$1" 2> /dev/null; } 2> "$work/time"
  read -r user sys < "$work/time"
  awk -v b="$bytes" -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", (u + s) * 1e3 / (b / 1e6) }' > "$work/cpu"
}
cpu() { cat "$work/cpu"; }

# rclone: a crypt remote (file names and contents encrypted) over a local directory.
export RCLONE_CONFIG_PEERLOCAL_TYPE=local
export RCLONE_CONFIG_PEERCRYPT_TYPE=crypt
export RCLONE_CONFIG_PEERCRYPT_REMOTE="peerlocal:$work/rclone-store"
RCLONE_CONFIG_PEERCRYPT_PASSWORD=$(rclone obscure "peer-comparison-password")
export RCLONE_CONFIG_PEERCRYPT_PASSWORD
t0=$(now); measured "rclone copy --config /dev/null '$src' peercrypt: --transfers 4"; sync; t1=$(now)
rclone_mb=$(rate "$t0" "$t1")
echo "rclone crypt:        $rclone_mb MB/s, $(cpu) CPU-ms/MB"

# restic: a fresh repository, one backup.
export RESTIC_PASSWORD=peer-comparison-password
restic init --quiet --repo "$work/restic" > /dev/null
t0=$(now); measured "restic backup --quiet --repo '$work/restic' '$src' > /dev/null"; sync; t1=$(now)
restic_mb=$(rate "$t0" "$t1")
echo "restic backup:       $restic_mb MB/s, $(cpu) CPU-ms/MB"

# tar | zstd -1 | age: one stream, one file.
age-keygen -o "$work/age.key" 2> /dev/null
recipient=$(age-keygen -y "$work/age.key")
t0=$(now); measured "tar -C '$src' -cf - . | zstd -1 -q | age -r '$recipient' > '$work/out.tar.zst.age'"; sync; t1=$(now)
age_mb=$(rate "$t0" "$t1")
echo "tar | zstd -1 | age: $age_mb MB/s, $(cpu) CPU-ms/MB"

# Quire: every job pushed once by SCANNERS scanners, through QUIC, into the local store.
per=$(( (jobs + scanners - 1) / scanners ))
quire=("$root/target/release/quire-loadtest")
[ "${PIN:-0}" = 1 ] && quire=(taskset -c 1 "${quire[@]}" --server-cpus 0)
"${quire[@]}" --corpus "$src" --scanners "$scanners" --jobs "$per" \
  --concurrency 8 --child --transport-ceiling --report "$work/quire.json" > /dev/null
read -r quire_mb ceiling server_cpu < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("%.1f %.1f %.2f" % (r["mb_per_s"], r["transport_ceiling_mb_per_s"], r["server_cpu_ms_per_mb"]))
' "$work/quire.json")
echo "quire (QUIC + store): $quire_mb MB/s, server $server_cpu CPU-ms/MB   (raw quinn ceiling in the same run: $ceiling MB/s)"
awk -v q="$quire_mb" -v r="$rclone_mb" -v s="$restic_mb" -v a="$age_mb" -v c="$ceiling" 'BEGIN {
  printf "quire / rclone crypt = %.2fx, quire / restic = %.2fx, quire / tar|zstd|age = %.2fx, quire / raw quinn = %.0f%%\n", q / r, q / s, q / a, 100 * q / c
}'
