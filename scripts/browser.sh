#!/usr/bin/env bash
# The console in a real browser: Debian's Chromium (installed here with apt, with the Noto CJK
# fonts the Chinese pages need), driven by Playwright (pinned in infra/requirements.txt),
# against the local stack STACK_API names (scripts/with-stack.sh), or one brought up here
# with tasks failing often enough that refunds show.
#
# Tests: tests/browser/. Screenshots of every page in both languages go to
# .local/screenshots/ (BROWSER_SCREENSHOTS to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)
if [ "${#need[@]}" -gt 0 ]; then
  echo "browser: installing ${need[*]} (apt)" >&2
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -z "${STACK_API:-}" ]; then
  SIM_LATENCY_MS=${SIM_LATENCY_MS:-300} SIM_FAIL_RATE=${SIM_FAIL_RATE:-0.3} \
    exec scripts/with-stack.sh "$0" "$@"
fi
export BROWSER_SCREENSHOTS=${BROWSER_SCREENSHOTS:-$PWD/.local/screenshots}
mkdir -p "$BROWSER_SCREENSHOTS"
infra/.venv/bin/python -m pytest -q -p no:cacheprovider tests/browser "$@"
