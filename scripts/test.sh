#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, and every unit and integration
# test. Integration tests start real `quire serve` processes on loopback and read
# ../shared/corpus. This script also installs (once, under target/) and starts what the tests
# need besides Rust: real S3 (moto) and Azure Blob (Azurite) servers on loopback, and the
# Python packages of the independent format decryptor. Last, the loom model checks and a
# bounded run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-off build gains nothing from incremental state, which would double the target's size.
export CARGO_INCREMENTAL=0
echo "disk before the build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"

# Every platform's dependencies, so that the tests that inspect other targets' dependency
# trees (`client/tests/dependencies.rs`) run offline.
cargo fetch --quiet

source scripts/test-servers.sh

# systemd's own unit check (tests/packaging.rs verifies dist/quire.service with it), and
# Prometheus's promtool (tests/metrics.rs checks the /metrics output with it).
if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq >/dev/null && apt-get install -y -qq systemd >/dev/null
fi
if ! command -v promtool >/dev/null; then
  apt-get update -qq >/dev/null && apt-get install -y -qq prometheus >/dev/null
fi
# nftables: tests/udp_blocked.rs and loadtest/tests/lossy_handshake.rs drop UDP in network
# namespaces of their own with it; openssl's
# s_client is the independent TLS client tests/transport.rs checks the TCP port with.
if ! command -v nft >/dev/null; then
  apt-get update -qq >/dev/null && apt-get install -y -qq nftables >/dev/null
fi
if ! command -v ip >/dev/null; then
  apt-get update -qq >/dev/null && apt-get install -y -qq iproute2 >/dev/null
fi
if ! command -v openssl >/dev/null; then
  apt-get update -qq >/dev/null && apt-get install -y -qq openssl >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
# The same behaviour over the TCP port (QUIC carried over TLS over TCP, for networks that drop
# UDP): the integration tests of pushing, resuming, refusing, limiting, enrolling and reading
# back, run again with every client connection forced to TCP (each `name::` selects the tests
# of tests/name.rs).
QUIRE_TRANSPORT=tcp cargo test --test integration -- resume:: edge_pages:: refusals:: limits:: \
  roles:: job_ownership:: enroll:: tls_ca:: retention:: push_input:: hostile_sockets:: drain:: \
  isolation:: agent:: transport:: bulk_jobs:: crash:: corpus_roundtrip:: honest_errors:: keys:: \
  audit_chain:: audit_events:: cli:: bootstrap::
# Model checks of the lock-free erase tracker: every interleaving, under loom. A target
# directory of its own, because `--cfg loom` changes how every crate is built.
RUSTFLAGS="--cfg loom" cargo test -p quire-erase-tracker --release --target-dir target/loom --test loom
# ... and of the key cache's shred race.
RUSTFLAGS="--cfg loom" cargo test -p quire-key-cache --release --target-dir target/loom --test loom
# Every fuzz target for a bounded time (QUIRE_FUZZ_SECONDS, 15 s each by default).
bash scripts/fuzz.sh
echo "disk after the suite: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target/ $(du -sh target | cut -f1)"
