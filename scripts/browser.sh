#!/usr/bin/env bash
# The console in a real browser: Debian's Chromium (installed here with apt; setup.sh brings
# the Noto CJK fonts the Chinese pages need), driven by Playwright (pinned in infra/requirements.txt),
# against the local stack STACK_API names (scripts/with-stack.sh), or one brought up here
# with tasks failing often enough that refunds show.
#
# Tests: tests/browser/. Screenshots of every page in both languages go to
# .local/screenshots/ (BROWSER_SCREENSHOTS to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_APT=chromium scripts/setup.sh

if [ -z "${STACK_API:-}" ]; then
  SIM_LATENCY_MS=${SIM_LATENCY_MS:-300} SIM_FAIL_RATE=${SIM_FAIL_RATE:-0.3} \
    exec scripts/with-stack.sh "$0" "$@"
fi
export BROWSER_SCREENSHOTS=${BROWSER_SCREENSHOTS:-$PWD/.local/screenshots}
mkdir -p "$BROWSER_SCREENSHOTS"
infra/.venv/bin/python -m pytest -q -p no:cacheprovider tests/browser "$@"
