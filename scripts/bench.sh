#!/usr/bin/env bash
# Benchmark: BENCH_TASKS tasks (default 2000) through the whole pipeline on the emulator;
# prints requests per 1,000 tasks by service and their on-demand cost. See docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MOTO_PYTHON="$PWD/infra/.venv/bin/python"
# BENCH=export: export throughput and memory for EXPORT_ROWS ledger rows (default 1,000,000).
case "${BENCH:-pipeline}" in
  export) test=bench_export ;;
  *) test=bench_pipeline ;;
esac
cargo test -p integration-tests --test api "$test" -- --ignored --nocapture 2>&1 | grep '^BENCH'
