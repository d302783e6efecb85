#!/usr/bin/env bash
# Benchmarks on the local stack (see docs/PERFORMANCE.md for the method and the figures).
#
#   scripts/bench.sh                 the pipeline: a 200-task and a 10,000-task batch through
#                                    every function on the emulator; AWS requests per task by
#                                    operation and function, US$ per 1,000 tasks, wall time
#   BENCH_SIZES="200" scripts/bench.sh   other batch sizes
#   BENCH=api scripts/bench.sh       the API's CPU per request for its five most common
#                                    routes (release build) and its cold start
#   BENCH=settle scripts/bench.sh    how long a 1,000-task batch (BENCH_TASKS) takes to settle
#                                    on the local stack at concurrency 100
#   BENCH=profile scripts/bench.sh   a CPU profile (perf) of the API serving BENCH_ROUTES
#                                    (default "GET /v1/credits"): .local/perf.api, summarised
#                                    by component, and a flame graph (BENCH_FLAMEGRAPH, default
#                                    .local/flamegraph.svg; docs/PERFORMANCE.md)
#   BENCH=export scripts/bench.sh    export throughput and memory (EXPORT_ROWS rows)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MOTO_PYTHON="$PWD/infra/.venv/bin/python"
case "${BENCH:-pipeline}" in
  export)
    cargo test -p integration-tests --test api bench_export -- --ignored --nocapture 2>&1 | grep '^BENCH'
    ;;
  api)
    cargo build --quiet --release -p api
    api_bin=${BENCH_API_BIN:-target/release/api}
    echo "BENCH api binary=$api_bin commit=$(git rev-parse --short HEAD) date=$(date -u +%F)"
    # One local stack with this API binary; the Python client measures the API process.
    # The pipeline's runner (a debug build) is paused meanwhile, so that the tasks each
    # POST /v1/batches dispatches do not share the two cores with the process measured.
    API_BIN=$api_bin SIM_LATENCY_MS=${SIM_LATENCY_MS:-3000} scripts/with-stack.sh bash -c '
      set -a; . .local/env; set +a
      runner=$(cat .local/runner.pid)
      kill -STOP "$runner"
      status=0
      infra/.venv/bin/python scripts/bench_api.py "$STACK_API" "$STACK_OPERATOR_CREDENTIAL" \
        "$(cat .local/api.pid)" "$0" "${BENCH_REQUESTS:-500}" "${BENCH_COLD_RUNS:-15}" || status=$?
      kill -CONT "$runner"
      exit $status' "$api_bin"
    ;;
  settle)
    scripts/with-stack.sh bash -c 'infra/.venv/bin/python scripts/bench_settle.py \
      "$STACK_API" "$STACK_OPERATOR_CREDENTIAL" "${BENCH_TASKS:-1000}"'
    ;;
  profile)
    command -v perf >/dev/null || { echo "bench: perf is needed (Debian: apt-get install linux-perf)" >&2; exit 1; }
    # The flame graph's renderer, at the version pinned in infra/cargo-tools.txt.
    read -r _ inferno_version < <(grep '^inferno ' infra/cargo-tools.txt)
    if [ "$(cat .local/tools/inferno.version 2>/dev/null)" != "$inferno_version" ]; then
      cargo install --quiet --locked --root .local/tools inferno --version "$inferno_version"
      echo "$inferno_version" > .local/tools/inferno.version
    fi
    cargo build --quiet --release -p api
    routes=${BENCH_ROUTES:-GET /v1/credits}
    # Call stacks by DWARF unwinding: the release build keeps no frame pointers.
    API_BIN=target/release/api BENCH_ROUTES="$routes" scripts/with-stack.sh bash -c '
      set -a; . .local/env; set +a
      pid=$(cat .local/api.pid)
      perf record -F 997 --call-graph dwarf,16384 -p "$pid" -o .local/perf.api 2>/dev/null &
      perf_pid=$!
      infra/.venv/bin/python scripts/bench_api.py \
        "$STACK_API" "$STACK_OPERATOR_CREDENTIAL" "$pid" target/release/api "${BENCH_REQUESTS:-1500}" 0
      kill -INT "$perf_pid"; wait "$perf_pid" || true'
    perf report -i .local/perf.api --no-children --stdio --sort dso,symbol -g none 2>/dev/null \
      | infra/.venv/bin/python scripts/profile_summary.py
    # The flame graph: every sampled stack of the API process, widest frames where the CPU went.
    svg=${BENCH_FLAMEGRAPH:-.local/flamegraph.svg}
    perf script -i .local/perf.api 2>/dev/null \
      | .local/tools/bin/inferno-collapse-perf \
      | .local/tools/bin/inferno-flamegraph --minwidth 0.5 \
          --title "API, $routes, $(git rev-parse --short HEAD), $(date -u +%F)" > "$svg"
    echo "BENCH profile flame graph: $svg"
    ;;
  *)
    echo "BENCH pipeline commit=$(git rev-parse --short HEAD) date=$(date -u +%F)"
    for n in ${BENCH_SIZES:-200 10000}; do
      EMULATOR_MEASURE_UNITS=1 BENCH_TASKS=$n cargo test -p integration-tests --test api bench_pipeline -- --ignored --nocapture 2>&1 | grep '^BENCH'
    done
    ;;
esac
