#!/usr/bin/env bash
# Fuzzes the whole API against its own document: Schemathesis (pinned in
# infra/requirements.txt) generates requests for every operation of /openapi.json, valid and
# invalid, and checks that no answer is a 5xx, that every status and every body is the one
# the document promises, and that invalid input is refused.
#
# It runs against the local stack STACK_API names (scripts/with-stack.sh), or brings one up,
# then gives the fuzzer an account and key of its own and exempts its
# address (loopback) from address blocks through the operator API: its bad-auth cases would
# otherwise block it within a minute. The rule itself is not weakened.
#
# Budget: FUZZ_MAX_EXAMPLES cases per operation and phase (default 50) and FUZZ_MAX_TIME
# seconds per pass (default 120); two passes (customer routes with the key, operator routes
# with the operator credential). Prints the number of cases; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

max_examples=${FUZZ_MAX_EXAMPLES:-50}
max_time=${FUZZ_MAX_TIME:-120}
# Fixed unless told otherwise, so CI replays the same cases; FUZZ_SEED=$RANDOM explores.
seed=${FUZZ_SEED:-20261202}
state=.local/fuzz
mkdir -p "$state"

# One local stack (scripts/with-stack.sh): the one STACK_API names, or one brought up here.
if [ -z "${STACK_API:-}" ]; then
  exec scripts/with-stack.sh "$0" "$@"
fi
api=$STACK_API
operator_token=${STACK_OPERATOR_CREDENTIAL:?set STACK_OPERATOR_CREDENTIAL with STACK_API}

# The fuzzer's own account, key and exemption (scripts/fuzz_setup.py prints the key).
key=$(infra/.venv/bin/python scripts/fuzz_setup.py "$api" "$operator_token")

st=infra/.venv/bin/schemathesis
checks=not_a_server_error,status_code_conformance,response_schema_conformance,negative_data_rejection,content_type_conformance
common=(--checks "$checks" --max-examples "$max_examples" --max-time "$max_time" --seed "$seed"
  --phases examples,coverage,fuzzing --workers 2 --no-shrink --request-timeout 30
  --suppress-health-check all --output-truncate true)

# Left out, and why: each would disable the fuzzer's own key, account or exemption partway
# through the run, after which every case is a 401 or 403 that tests nothing.
#   PATCH/DELETE /v1/api-keys/{key_id}                   can disable or revoke its own key
#   PATCH/DELETE /admin/v1/accounts/{id}/api-keys/{key}  the same, as the operator
#   POST /admin/v1/accounts/{id}/terminate               ends its account (and its keys)
#   DELETE /admin/v1/ip-block-exemptions/{cidr}          lifts its exemption
#   DELETE /admin/v1/operators/{name}, POST .../rotate   can revoke the operator it signs in as
excluded=(
  --exclude-operation-id updateKey --exclude-operation-id revokeKey
  --exclude-operation-id operatorUpdateKey --exclude-operation-id operatorRevokeKey
  --exclude-operation-id terminateAccount --exclude-operation-id removeBlockExemption
  --exclude-operation-id revokeOperator --exclude-operation-id rotateOperator
)

status=0
t0=$SECONDS
echo "== fuzz: customer routes (its own key), seed $seed"
"$st" run "$api/openapi.json" -H "Authorization: Bearer $key" --include-path-regex '^/v1/' \
  "${common[@]}" "${excluded[@]}" 2>&1 | tee "$state/customer.out" || status=$?
echo "== fuzz: operator routes (the operator credential), seed $seed"
"$st" run "$api/openapi.json" -H "Authorization: Bearer $operator_token" --include-path-regex '^/admin/' \
  "${common[@]}" "${excluded[@]}" 2>&1 | tee "$state/operator.out" || status=$?
echo "== fuzz: public callbacks (no credential: the provider's signature is the authentication), seed $seed"
"$st" run "$api/openapi.json" --include-path-regex '^/webhooks/' \
  "${common[@]}" 2>&1 | tee "$state/public.out" || status=$?
# Schemathesis ends each run with "N generated, ...".
cases=$(cat "$state/customer.out" "$state/operator.out" "$state/public.out" | awk '$2 == "generated," { n += $1 } END { print n + 0 }')
echo "fuzz: $cases cases in $((SECONDS - t0)) s, seed $seed, exit status $status"
exit "$status"
