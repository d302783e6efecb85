#!/usr/bin/env bash
# Installs the pinned local tooling (infra/requirements.txt) into infra/.venv, the pinned
# Node packages the tests check against (infra/node/package-lock.json) into infra/node, and
# from Debian: the Noto CJK font invoices are laid out in (fonts-noto-cjk, SIL OFL 1.1) and
# pdftotext (poppler-utils), which the tests read invoices back with.
# Idempotent and quick when nothing changed; run by dev.sh, test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# SETUP_APT names more Debian packages a caller needs (browser.sh: chromium).
need=()
for pkg in fonts-noto-cjk poppler-utils ${SETUP_APT:-}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]} (apt)" >&2
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

venv=infra/.venv
stamp="$venv/.requirements.sha256"
want=$(cat infra/requirements.txt "$@" 2>/dev/null | sha256sum | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv" >&2
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned tools into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements.txt "${@/#/-r}"
  echo "$want" > "$stamp"
fi

node_stamp=infra/node/node_modules/.lock.sha256
node_want=$(sha256sum infra/node/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_want" ]; then
  echo "setup: installing pinned Node packages into infra/node" >&2
  npm ci --prefix infra/node --no-audit --no-fund --silent
  echo "$node_want" > "$node_stamp"
fi
