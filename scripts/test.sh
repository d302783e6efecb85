#!/usr/bin/env bash
# The full test suite:
#   1. every crate's tests, with the integration tests on the AWS emulator (moto, started by
#      the test harness on a free loopback port): the real SDK calls against the tables,
#      queues and bucket of template.yaml; the port contract suite on both implementations;
#   2. the HTTP suite once more on the in-memory twins of every port (TEST_BACKEND=memory),
#      so the use cases are proven on both and the large runs fit CI;
#   3. the roles check: each function's role in template.yaml against the AWS operations
#      that function made in step 1 (the emulator launcher records them per access key id
#      into $EMULATOR_GRANTS_LOG); tests/tests/roles.rs. Skipped when arguments filter the
#      tests (a partial run does not show everything a function needs);
#   4. the API fuzzer (scripts/fuzz.sh) against the local stack: every operation of
#      /openapi.json, about 4 minutes. Skipped when arguments filter the tests.
# Ends with one total line: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MOTO_PYTHON="$PWD/infra/.venv/bin/python"
log=$(mktemp)
export EMULATOR_GRANTS_LOG
EMULATOR_GRANTS_LOG=$(mktemp)
trap 'rm -f "$log" "$EMULATOR_GRANTS_LOG"' EXIT
status=0
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log" || status=$?
if [ "$#" -eq 0 ]; then
  echo "== each function's role against what it did"
  cargo test -p integration-tests --test roles -- --ignored 2>&1 | tee -a "$log" || status=$?
fi
echo "== the HTTP suite on the in-memory twins"
TEST_BACKEND=memory cargo test -p integration-tests --test api "$@" 2>&1 | tee -a "$log" || status=$?
if [ "$#" -eq 0 ]; then
  echo "== the API fuzzer against the local stack"
  scripts/fuzz.sh || status=$?
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
