#!/usr/bin/env bash
# Benchmark: how long a refund takes to appear in the console's live ledger (median, p95,
# max over the refunds of one batch). Brings up a local stack (scripts/with-stack.sh) whose
# simulated provider fails 30 % of tasks, unless STACK_API names one. BENCH_TASKS (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${STACK_API:-}" ]; then
  SIM_LATENCY_MS=${SIM_LATENCY_MS:-300} SIM_FAIL_RATE=${SIM_FAIL_RATE:-0.3} exec scripts/with-stack.sh "$0" "$@"
fi
infra/.venv/bin/python tests/browser/bench_live.py
