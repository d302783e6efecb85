#!/usr/bin/env bash
# The full test suite: unit tests of the domain, and integration tests that boot the real API
# against the AWS emulator (moto, started by the test harness on a free loopback port).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MOTO_PYTHON="$PWD/infra/.venv/bin/python"
exec cargo test --workspace --all-targets "$@"
