#!/usr/bin/env bash
# Runs a command against one local stack: brings up scripts/dev.sh on a free loopback port,
# waits until it answers, runs the command with STACK_API (its base URL) and
# STACK_OPERATOR_CREDENTIAL (the first operator's credential) set, then stops the stack.
# With STACK_API already set, runs the command against that stack instead.
#
# The stack's simulated provider takes its settings from the environment (SIM_LATENCY_MS,
# SIM_FAIL_RATE, ...: see docs/PROVIDERS.md), so a caller can make failures common.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${STACK_API:-}" ]; then
  : "${STACK_OPERATOR_CREDENTIAL:?set STACK_OPERATOR_CREDENTIAL with STACK_API}"
  exec "$@"
fi

scripts/setup.sh
state=.local/stack
mkdir -p "$state"
stack_pid=
stop_stack() {
  if [ -n "$stack_pid" ]; then
    kill -TERM "$stack_pid" 2>/dev/null || true
    wait "$stack_pid" 2>/dev/null || true
  fi
}
trap stop_stack EXIT

port=$(infra/.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PORT=$port setsid scripts/dev.sh > "$state/dev.out" 2>&1 &
stack_pid=$!
# dev.sh prints the operator credential and the demo key once the stack answers (after a
# build, the first time).
for _ in $(seq 3000); do
  grep -q '^Local stack is up' "$state/dev.out" 2>/dev/null && grep -q 'API key (shown once)' "$state/dev.out" && break
  kill -0 "$stack_pid" 2>/dev/null || { cat "$state/dev.out" >&2; exit 1; }
  sleep 0.2
done
STACK_API="http://127.0.0.1:$port"
STACK_OPERATOR_CREDENTIAL=$(awk '/Operator: / {print $NF}' "$state/dev.out")
[ -n "$STACK_OPERATOR_CREDENTIAL" ] || { echo "with-stack: the stack did not come up; see $state/dev.out" >&2; exit 1; }
export STACK_API STACK_OPERATOR_CREDENTIAL
echo "with-stack: local stack at $STACK_API (log: $state/dev.out)" >&2
"$@"
