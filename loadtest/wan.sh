#!/usr/bin/env bash
# Scanners in a branch office: `quire-loadtest` pushes the corpus to a `quire serve` across an
# emulated WAN link (delay, bottleneck rate, random loss) and prints its report.
#
#   loadtest/wan.sh [RTT_MS] [RATE_MBIT] [LOSS] [SCANNERS]     (defaults: 40 100 0 4)
#
# Needs root: two network namespaces (qwan-scan, qwan-srv) joined by two TUN devices that
# `linkemu` forwards between (this kernel has no netem). QUIRE_CONGESTION (bdp, the default;
# bbr; cubic; newreno) picks the scanners' congestion controller; CORPUS the job folders (default
# the shared corpus); JOBS the jobs each scanner pushes (default 7: 4 x 7 jobs are about 30 MB
# of the corpus); CONCURRENCY the pages in flight per job (default 8); JOBS_IN_FLIGHT the jobs
# each scanner pushes at once (default 1); COMPETE_TCP=1 runs
# a bulk TCP flow (the kernel's Cubic) across the same link from 2 s before the scanners start
# until they finish, and prints its rate (fairness). PEER=1 then sends the same jobs (the
# same corpus folders in the same order, scanners x jobs of them) across the same link with
# rclone to `rclone serve webdav` over HTTPS with a crypt remote (what office scanners do
# natively: scan to WebDAV), SCANNERS transfers at once, and prints its rate.
# BIN: a directory holding another build's binaries to run instead of building these. IDLE=N
# connects N more scanners that stay idle (keep-alives) over IDLE_RAMP seconds (default 30)
# before the pushing ones start: a large fleet behind the same link. SERVER_TOML: more lines for
# the server's quire.toml (`\n` between them).
# Release builds; rclone and openssl are installed (Debian) when missing and PEER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
rtt=${1:-40}
rate=${2:-100}
loss=${3:-0}
scanners=${4:-4}
corpus=${CORPUS:-../shared/corpus/jobs}
jobs=${JOBS:-7}

if [ -n "${BIN:-}" ]; then
  bin=$(cd "$BIN" && pwd)   # another build's quire, quire-loadtest and linkemu, side by side
else
  cargo build --release --quiet -p quire -p quire-loadtest --bins
  bin=$PWD/target/release
fi

work=$(mktemp -d)
cleanup() {
  exec 3>&- 2>/dev/null || true
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "${link_pid:-}" ] && wait "$link_pid" 2>/dev/null || true
  ip netns del qwan-scan 2>/dev/null || true
  ip netns del qwan-srv 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del qwan-scan 2>/dev/null || true
ip netns del qwan-srv 2>/dev/null || true

# The link: linkemu lives as long as its stdin (fd 3) is open.
mkfifo "$work/link.in"
"$bin/linkemu" --a qwan-a --b qwan-b --rtt-ms "$rtt" --rate-mbit "$rate" --loss "$loss" \
  < "$work/link.in" > "$work/link.out" 2> "$work/link.err" &
link_pid=$!
exec 3> "$work/link.in"
for _ in $(seq 50); do grep -q ready "$work/link.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/link.out" || { cat "$work/link.err" >&2; exit 1; }

ip netns add qwan-scan
ip netns add qwan-srv
ip link set qwan-a netns qwan-scan
ip link set qwan-b netns qwan-srv
ip -n qwan-scan addr add 10.77.0.1/24 dev qwan-a
ip -n qwan-srv addr add 10.77.0.2/24 dev qwan-b
for ns in qwan-scan qwan-srv; do ip -n "$ns" link set lo up; done
# The queues in front of linkemu hold what it has yet to read: a short one (the default 500
# packets is 4 ms at 1 Gbit/s) drops bursts while the emulator waits for a core, which the
# senders would take for link loss. The link's own queue is linkemu's.
ip -n qwan-scan link set qwan-a txqueuelen 20000 up
ip -n qwan-srv link set qwan-b txqueuelen 20000 up

# The server, on its embedded defaults, in its namespace.
mkdir "$work/srv"
# The scanners use the dev credential; /metrics says what receive credit the scanners had.
printf '[dev]\nbootstrap = true\n[metrics]\nlisten = "10.77.0.2:9100"\n' > "$work/srv/quire.toml"
printf '%b\n' "${SERVER_TOML:-}" >> "$work/srv/quire.toml"   # more of the server's settings
(cd "$work/srv" && exec ip netns exec qwan-srv "$bin/quire" serve --config quire.toml --listen 10.77.0.2:4433) \
  > "$work/serve.out" 2> "$work/serve.err" 3>&- &
server_pid=$!
for _ in $(seq 100); do grep -q "listening" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening" "$work/serve.out" || { cat "$work/serve.err" >&2; exit 1; }

if [ "${COMPETE_TCP:-0}" = 1 ]; then
  ip netns exec qwan-srv python3 -c '
import socket, time, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.2", 5001)); s.listen(1); print("up", flush=True)
c, _ = s.accept(); n = 0; t0 = time.time()
while True:
    b = c.recv(1 << 16)
    if not b: break
    n += len(b)
dt = time.time() - t0
print(f"competing TCP flow: {n/dt/1e6:.2f} MB/s over {dt:.1f} s", file=sys.stderr)
' > "$work/tcp.out" 2> "$work/tcp.err" 3>&- &
  tcp_sink=$!
  for _ in $(seq 50); do grep -q up "$work/tcp.out" 2>/dev/null && break; sleep 0.1; done
  ip netns exec qwan-scan python3 -c '
import socket
c = socket.create_connection(("10.77.0.2", 5001)); b = bytes(1 << 16)
while True: c.sendall(b)
' 2>/dev/null 3>&- &
  tcp_source=$!
  sleep 2
fi

# Receive credit granted to the scanners, sampled each second (the largest is printed).
(while kill -0 "$server_pid" 2>/dev/null; do
  ip netns exec qwan-srv curl -s --max-time 1 http://10.77.0.2:9100/metrics | grep '^quire_receive_credit'
  sleep 1
done > "$work/credit.log" 2>/dev/null 3>&-) &
echo "link: RTT ${rtt} ms, ${rate} Mbit/s, loss ${loss}; congestion ${QUIRE_CONGESTION:-bdp}; ${scanners} scanners x ${jobs} jobs" >&2
ip netns exec qwan-scan "$bin/quire-loadtest" --server 10.77.0.2:4433 \
  --credential "$work/srv/quire-data/dev/device.cred" --corpus "$corpus" \
  --scanners "$scanners" --jobs "$jobs" --concurrency "${CONCURRENCY:-8}" --jobs-in-flight "${JOBS_IN_FLIGHT:-1}" \
  ${IDLE:+--idle-scanners "$IDLE" --idle-ramp-up "${IDLE_RAMP:-30}"} 3>&-
# Packets dropped outside the emulated link (a TUN device's queue towards linkemu, a full
# socket receive buffer) would read as link loss to the senders: say how many there were.
for ns in qwan-scan qwan-srv; do
  ip netns exec "$ns" nstat -az UdpRcvbufErrors UdpInErrors 2>/dev/null | awk -v ns="$ns" \
    '/^Udp/ { printf "%s: %s %s\n", ns, $1, $2 }' >&2
  ip -n "$ns" -s link show | awk -v ns="$ns" \
    '/^[0-9]+:/ { dev = $2 } /TX:/ { getline; printf "%s: %s TX dropped %s\n", ns, dev, $4 }' >&2
done
awk '{ if ($2 > max[$1]) max[$1] = $2 } END { for (m in max) printf "largest %s: %.1f MiB\n", m, max[m] / 1048576 }' \
  "$work/credit.log" >&2
if [ "${GET:-0}" = 1 ]; then
  # Downloads across the same link: the corpus's job folders pushed GET_COPIES times (default
  # 4), then fetched back with `quire get`, SCANNERS at once (what the server sends runs its
  # congestion controller: QUIRE_CONGESTION applies to it too).
  cred="$work/srv/quire-data/dev/device.cred"
  mapfile -t folders < <(find "$corpus" -mindepth 1 -maxdepth 1 -type d | sort)
  for _ in $(seq "${GET_COPIES:-4}"); do
    ip netns exec qwan-scan "$bin/quire" push --no-progress --again --credential "$cred" \
      --server 10.77.0.2:4433 --state-dir "$work/push-state" "${folders[@]}" 3>&- \
      >> "$work/jobs" 2> /dev/null   # one job id per line
  done
  got_bytes=$(( $(du -cb "${folders[@]}" | tail -1 | cut -f1) * ${GET_COPIES:-4} ))
  t0=$(date +%s.%N)
  xargs -P "$scanners" -I{} ip netns exec qwan-scan "$bin/quire" get --credential "$cred" \
    --server 10.77.0.2:4433 --job {} --out "$work/got/{}" < "$work/jobs" > /dev/null 3>&-
  t1=$(date +%s.%N)
  awk -v b="$got_bytes" -v t0="$t0" -v t1="$t1" -v n="$(wc -l < "$work/jobs")" 'BEGIN {
    printf "downloads (%d jobs, quire get, %d at once): %.2f MB/s, %d bytes in %.1f s\n", n, '"$scanners"', b / (t1 - t0) / 1e6, b, t1 - t0
  }' >&2
fi
if [ "${PEER:-0}" = 1 ]; then
  command -v rclone > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q rclone > /dev/null
  # The same folders the scanners pushed: round j of the scanners takes corpus jobs j*S ..
  # j*S+S-1 (mod N), one each.
  mapfile -t all < <(find "$corpus" -mindepth 1 -maxdepth 1 -type d | sort)
  mkdir "$work/peer-src"
  for i in $(seq 0 $(( scanners * jobs - 1 ))); do
    cp -r "${all[$(( i % ${#all[@]} ))]}" "$work/peer-src/$i-$(basename "${all[$(( i % ${#all[@]} ))]}")"
  done
  peer_bytes=$(find "$work/peer-src" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=peer \
    -keyout "$work/peer.key" -out "$work/peer.crt" 2> /dev/null
  export RCLONE_CONFIG_PEERDISK_TYPE=local
  export RCLONE_CONFIG_PEERCRYPT_TYPE=crypt
  export RCLONE_CONFIG_PEERCRYPT_REMOTE="peerdisk:$work/peer-store"
  RCLONE_CONFIG_PEERCRYPT_PASSWORD=$(rclone obscure "peer-comparison-password")
  export RCLONE_CONFIG_PEERCRYPT_PASSWORD
  ip netns exec qwan-srv rclone serve webdav --config /dev/null peercrypt: --addr 10.77.0.2:8443 \
    --cert "$work/peer.crt" --key "$work/peer.key" > "$work/dav.out" 2>&1 3>&- &
  dav_pid=$!
  for _ in $(seq 100); do ip netns exec qwan-srv bash -c '</dev/tcp/10.77.0.2/8443' 2>/dev/null && break; sleep 0.1; done
  export RCLONE_CONFIG_PEERDAV_TYPE=webdav RCLONE_CONFIG_PEERDAV_URL=https://10.77.0.2:8443
  t0=$(date +%s.%N)
  ip netns exec qwan-scan rclone copy --config /dev/null --no-check-certificate \
    --transfers "$scanners" "$work/peer-src" peerdav:run 3>&-
  t1=$(date +%s.%N)
  kill "$dav_pid" 2>/dev/null || true
  stored=$(find "$work/peer-store" -type f | wc -l)
  awk -v b="$peer_bytes" -v t0="$t0" -v t1="$t1" -v n="$stored" 'BEGIN {
    printf "peer (rclone -> webdav over HTTPS, crypt remote): %.2f MB/s, %d bytes in %.1f s, %d files stored\n", b / (t1 - t0) / 1e6, b, t1 - t0, n
  }' >&2
fi
if [ -n "${tcp_source:-}" ]; then
  kill "$tcp_source" 2>/dev/null || true
  wait "$tcp_sink" 2>/dev/null || true
  cat "$work/tcp.err" >&2
fi
kill "$server_pid" 2>/dev/null || true
exec 3>&-
wait "$link_pid" 2>/dev/null || true
cat "$work/link.err" >&2
