#!/usr/bin/env bash
# The full test suite:
#   1. every crate's tests, with the integration tests on the AWS emulator (moto, started by
#      the test harness on a free loopback port): the real SDK calls against the tables,
#      queues and bucket of template.yaml; the port contract suite on both implementations;
#   2. the HTTP suite once more on the in-memory twins of every port (TEST_BACKEND=memory),
#      so the use cases are proven on both and the large runs fit CI;
#   3. the API fuzzer (scripts/fuzz.sh) against the local stack: every operation of
#      /openapi.json, about 4 minutes. Skipped when arguments filter the tests.
# Ends with one total line: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MOTO_PYTHON="$PWD/infra/.venv/bin/python"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
echo "== the HTTP suite on the in-memory twins"
TEST_BACKEND=memory cargo test -p integration-tests --test api "$@" 2>&1 | tee -a "$log" || status=$?
if [ "$#" -eq 0 ]; then
  echo "== the API fuzzer against the local stack"
  scripts/fuzz.sh || status=$?
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
