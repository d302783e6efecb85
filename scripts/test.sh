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
#   4. one local stack (scripts/with-stack.sh) for the console's browser tests
#      (scripts/browser.sh: Debian's Chromium driven by Playwright, about 1 minute) and then
#      the API fuzzer (scripts/fuzz.sh: every operation of /openapi.json, about 4 minutes).
#      Skipped when arguments filter the tests.
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
# --no-fail-fast: one failing test binary must not hide the results of the others (nor the
# operations the roles check needs from the HTTP suite).
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
if [ "$#" -eq 0 ]; then
  echo "== each function's role against what it did"
  cargo test -p integration-tests --test roles -- --ignored 2>&1 | tee -a "$log" || status=$?
fi
echo "== the HTTP suite on the in-memory twins"
TEST_BACKEND=memory cargo test -p integration-tests --test api "$@" 2>&1 | tee -a "$log" || status=$?
if [ "$#" -eq 0 ]; then
  # One local stack for both (scripts/with-stack.sh), its simulated provider failing ~30 % of
  # tasks so refunds show in the console. The browser goes first: the fuzzer's operator pass
  # changes shared settings (model availability) that the browser's batches depend on.
  echo "== one local stack: the console in a browser, then the API fuzzer"
  SIM_LATENCY_MS=300 SIM_FAIL_RATE=0.3 scripts/with-stack.sh bash -c \
    'set -o pipefail; st=0; scripts/browser.sh 2>&1 | tee -a "$0" || st=1; scripts/fuzz.sh || st=1; exit $st' "$log" \
    || status=$?
fi
# cargo's "test result: ok. N passed; M failed" lines, and pytest's "N passed, M failed in T s".
awk '/^test result:/ || /^(=+ )?[0-9]+ (passed|failed)/ {
       for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
