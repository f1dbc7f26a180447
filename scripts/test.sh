#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs
# unit tests, the atlas-python 0.10 compatibility suite, the backend conformance
# suite (memory, local directory, a moto S3 server on 127.0.0.1), CLI and mount tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
export ATLASFS_PYTHON="$PWD/.venv/bin/python"
export PATH="$PWD/.venv/bin:$PATH"
cargo build --release --locked 2>&1 | tail -n 3
# Release profile: the suites move real data; debug builds would dominate the time.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --locked -- --test-threads=2 2>&1 | tee "$log"
# A short libFuzzer run of every fuzz target (fuzz/); a crash or an unbounded
# allocation fails the run. It prints one `test result:` line counting the targets.
fuzz_rc=0
bash scripts/fuzz.sh --smoke 2>&1 | tee -a "$log" || fuzz_rc=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "atlasfs suite: %d passed, %d failed\n", p, f }' "$log"
exit "$fuzz_rc"
