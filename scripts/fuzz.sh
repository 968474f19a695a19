#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (QUIRE_FUZZ_SECONDS, default 15 s
# each) on the stable toolchain, without sanitizers, starting from a copy of its seed corpus so
# that a run's discoveries do not land in the checkout. Installs cargo-fuzz under target/tools
# once. A crash fails the run and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${QUIRE_FUZZ_SECONDS:-15}
tools=$PWD/target/tools
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install --quiet --locked --root "$tools" cargo-fuzz
fi
cd fuzz
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^quire-fuzz$')
for t in $targets; do
  work=$(mktemp -d)
  cp -r "corpus/$t/." "$work/"
  echo "fuzzing $t for ${secs} s"
  "$tools/bin/cargo-fuzz" run -s none -O "$t" "$work" -- -max_total_time="$secs" 2>&1 \
    | grep -E '^(Done|#[0-9]+ +DONE)|ERROR|panicked|SUMMARY' || true
  status=${PIPESTATUS[0]}
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $t failed (exit $status); the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
