#!/usr/bin/env bash
# The full test suite: unit tests of the domain, and integration tests that boot the real API
# and the pipeline's handlers against the AWS emulator (moto, started by the test harness on a
# free loopback port). Ends with one total line: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MOTO_PYTHON="$PWD/infra/.venv/bin/python"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
