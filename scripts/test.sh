#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, and every unit and integration
# test. Integration tests start real `quire serve` processes on loopback and read
# ../shared/corpus; the format interop test runs a Python decryptor, whose packages
# (cryptography, zstandard) this script installs into target/interop-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/interop-venv
if ! "$venv/bin/python" -c "import cryptography, zstandard" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check cryptography zstandard
fi
export QUIRE_PYTHON="$PWD/$venv/bin/python"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
