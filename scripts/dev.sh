#!/usr/bin/env bash
# Brings up the whole system locally: the AWS emulator on loopback, its tables and bucket
# created from template.yaml, the API on http://127.0.0.1:${PORT:-3000}, and a demo account
# with credits and a key. Runs until Ctrl-C, then stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

port=${PORT:-3000}
state=.local
mkdir -p "$state"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "dev: port $port is already in use; set PORT to another one" >&2
  exit 1
fi

echo "dev: building" >&2
cargo build --quiet -p api -p devstack

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "dev: stopped" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The emulator, on a free port; it prints "READY <port>".
infra/.venv/bin/python infra/moto_server.py --port 0 > "$state/moto.out" 2> "$state/moto.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^READY' "$state/moto.out" 2>/dev/null && break; sleep 0.1; done
moto_port=$(awk '/^READY/ {print $2}' "$state/moto.out")
[ -n "$moto_port" ] || { echo "dev: the emulator did not start; see $state/moto.log" >&2; exit 1; }
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"

# The fake Stripe, on a free port; it prints "READY <url>".
target/debug/devstack fake-stripe --port 0 --webhook "http://127.0.0.1:$port/webhooks/stripe" \
  --webhook-secret whsec_local_development_only --secret-key sk_test_local_development_only \
  > "$state/stripe.out" 2> "$state/stripe.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^READY' "$state/stripe.out" 2>/dev/null && break; sleep 0.1; done
stripe_port=$(awk '/^READY/ {n = split($2, a, ":"); print a[n]}' "$state/stripe.out")
[ -n "$stripe_port" ] || { echo "dev: the fake Stripe did not start; see $state/stripe.log" >&2; exit 1; }

target/debug/devstack bootstrap --endpoint "$AWS_ENDPOINT_URL" --prefix local > "$state/env"
{
  echo "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
  echo "AWS_ACCESS_KEY_ID=test"
  echo "AWS_SECRET_ACCESS_KEY=test"
  echo "AWS_REGION=us-east-1"
  echo "S3_FORCE_PATH_STYLE=true"
  # Local mode: webhooks may go to http:// and loopback receivers (never in the cloud).
  echo "WEBHOOKS_ALLOW_PRIVATE=true"
  # The local Stripe webhook endpoint's signing secret (in the cloud: STRIPE_SECRET_ARN).
  echo "STRIPE_WEBHOOK_SECRET=whsec_local_development_only"
  # Card checkout goes to the fake Stripe started below (devstack::fake_stripe), which pays
  # from its own page and sends the signed events to this API.
  echo "STRIPE_SECRET_KEY=sk_test_local_development_only"
  echo "STRIPE_API_BASE=http://127.0.0.1:$stripe_port"
  echo "CHECKOUT_RETURN_URL=http://127.0.0.1:$port/console/#/billing"
  # Invoices are laid out in Debian's Noto CJK (scripts/setup.sh); the cloud has a layer.
  echo "INVOICE_FONT_PATH=/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
} >> "$state/env"
set -a; . "$state/env"; set +a
# The first named operator, issued by the bootstrap command as on a real deployment.
operator_credential=$(target/debug/devstack operator --name local-admin)

# API_BIN: another build of the API (the benchmark runs a release build).
PORT=$port "${API_BIN:-target/debug/api}" > "$state/api.log" 2>&1 &
pids+=($!)
echo $! > "$state/api.pid"
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/health" >/dev/null || { echo "dev: the API did not start; see $state/api.log" >&2; exit 1; }
# The synthetic probe's own account and read-only key (docs/SLA.md).
probe_key=$(target/debug/devstack probe-key --api "http://127.0.0.1:$port" --operator-credential "$operator_credential")
# The task worker, settlement, the sweeper, the month close and the probe, fed from the
# emulator's queues with Lambda's SQS semantics (the sweeper every 20 s here, every minute
# in AWS).
SWEEP_EVERY_SECS=20 PROBE_BASE_URL="http://127.0.0.1:$port" PROBE_API_KEY="$probe_key" \
  target/debug/local-runner > "$state/runner.log" 2>&1 &
pids+=($!)
echo $! > "$state/runner.pid"

echo
echo "Local stack is up."
echo "  API:            http://127.0.0.1:$port   (OpenAPI: /openapi.json)"
echo "  Console:        http://127.0.0.1:$port/console   (sign in with the demo key below; operators at /console#/operator)"
echo "  Emulator:       $AWS_ENDPOINT_URL        (environment in $state/env)"
echo "  Fake Stripe:    http://127.0.0.1:$stripe_port   (POST /v1/checkout opens its payment page; Pay grants at once)"
echo "  Operator:       local-admin, credential $operator_credential"
echo "  Logs:           $state/api.log, $state/runner.log, $state/moto.log"
echo
target/debug/devstack demo --api "http://127.0.0.1:$port" --operator-credential "$operator_credential"
echo
echo "Batches run on the simulated provider (a few seconds a video; about 5 % fail and are"
echo "refunded at once, 2 % are rejected for content). Watch: GET /v1/batches/{id}."
echo "Ctrl-C stops everything."
wait
