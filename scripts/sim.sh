#!/usr/bin/env bash
# The deterministic simulator of the money path (docs/TESTING.md).
#   scripts/sim.sh 100000            # seeds 0..100000
#   scripts/sim.sh --seed 42 --verbose   # one seed, with its step trace
#   scripts/sim.sh --from 5000 --seeds 1000 --crash 0.05
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ge 1 && "$1" =~ ^[0-9]+$ ]]; then
  n=$1
  shift
  set -- --seeds "$n" "$@"
fi
cargo build --release -q -p integration-tests --bin sim
exec target/release/sim "$@"
