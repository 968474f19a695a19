#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, and every unit and integration
# test (which start real `quire serve` processes on loopback and read ../shared/corpus).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
