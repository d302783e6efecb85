"""How long a batch takes to settle on the local stack (scripts/bench.sh, BENCH=settle): an
account with max_concurrency 100, one sora-2 batch of N tasks (default 1,000) on the
simulated provider, its status read once a second until it is completed.

Usage: bench_settle.py API_URL OPERATOR_CREDENTIAL [N]
"""

import sys
import time
import uuid

from bench_api import Client


def main() -> None:
    api, operator = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    c = Client(api)
    run = uuid.uuid4().hex[:12]
    acct = c.call("POST", "/admin/v1/accounts", operator, {
        "request_id": f"settle-{run}", "name": f"Settle benchmark {run}", "plan": "enterprise",
        "retention_days": 30, "max_concurrency": 100, "min_batch_size": 1,
    })["id"]
    c.call("POST", f"/admin/v1/accounts/{acct}/grants", operator, {
        "request_id": f"settle-{run}-credits", "pack": "pack_10000", "reason": "settle benchmark",
    })
    key = c.call("POST", f"/admin/v1/accounts/{acct}/api-keys", operator, {
        "request_id": f"settle-{run}-key", "name": "bench", "scopes": ["read", "batches:write"],
    })["secret"]
    tasks = [{"prompt": f"Aerial shot of a coastline, take {i}"} for i in range(n)]
    t0 = time.perf_counter()
    batch = c.call("POST", "/v1/batches", key,
                   {"request_id": f"settle-{run}", "model": "sora-2", "tasks": tasks})["id"]
    while True:
        b = c.call("GET", f"/v1/batches/{batch}", key)
        if b["status"] == "completed":
            break
        time.sleep(1)
    wall = time.perf_counter() - t0
    counts = b.get("counts", {})
    print(f"BENCH settle tasks={n} concurrency=100 wall_s={wall:.1f} counts={counts}")


if __name__ == "__main__":
    main()
