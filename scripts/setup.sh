#!/usr/bin/env bash
# Installs the pinned local tooling (infra/requirements.txt) into infra/.venv.
# Idempotent and quick when nothing changed; run by dev.sh, test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

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
