#!/usr/bin/env bash
# Benchmark: BENCH_TASKS tasks (default 2000) through the whole pipeline on the emulator;
# prints requests per 1,000 tasks by service and their on-demand cost. See docs/PERFORMANCE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MOTO_PYTHON="$PWD/infra/.venv/bin/python"
cargo test -p integration-tests --test api bench_pipeline -- --ignored --nocapture 2>&1 | grep '^BENCH'
