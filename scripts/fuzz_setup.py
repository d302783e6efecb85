"""Gives the API fuzzer (scripts/fuzz.sh) what it needs, through the operator API only:
an exemption of loopback from address blocks, a fresh enterprise account with a request
budget and credits, and an API key with every scope. Prints the key's secret.

Usage: fuzz_setup.py API_URL OPERATOR_CREDENTIAL
"""

import json
import sys
import urllib.request
import uuid


def call(api: str, token: str, method: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        api + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def main() -> None:
    api, token = sys.argv[1], sys.argv[2]
    run = uuid.uuid4().hex[:12]
    for cidr in ("127.0.0.0/8", "::1"):
        call(api, token, "POST", "/admin/v1/ip-block-exemptions",
             {"cidr": cidr, "reason": "the API fuzzer (scripts/fuzz.sh) on the local stack"})
    account = call(api, token, "POST", "/admin/v1/accounts", {
        "request_id": f"fuzz-{run}", "name": f"API fuzzer {run}", "plan": "enterprise",
        "retention_days": 30, "max_concurrency": 4, "min_batch_size": 1,
    })
    acct = account["id"]
    call(api, token, "PATCH", f"/admin/v1/accounts/{acct}", {"request_budget_per_min": 60000})
    call(api, token, "POST", f"/admin/v1/accounts/{acct}/grants", {
        "request_id": f"fuzz-{run}-credits", "pack": "pack_10000",
        "reason": "API fuzzer",
    })
    key = call(api, token, "POST", f"/admin/v1/accounts/{acct}/api-keys", {
        "request_id": f"fuzz-{run}-key", "name": "fuzzer",
        "scopes": ["read", "batches:write", "admin"], "rate_limit_per_min": 60000,
    })
    print(key["secret"])


if __name__ == "__main__":
    main()
