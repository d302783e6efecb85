"""How long a refund takes to show in the console's live ledger (a benchmark, not a test).

For each refund entry the console adds to the open ledger page, the delay from the entry's
creation (its `created_at`, written by the server) to the moment the row appeared in the page
(a MutationObserver in the page notes Date.now()); same machine, same clock. Prints the
median, the 95th percentile and the maximum.

Run: scripts/bench-console.sh (it brings up a stack whose simulated provider fails often).
"""

import os
import statistics
import sys
import uuid
from datetime import datetime

sys.path.insert(0, os.path.dirname(__file__))
from conftest import API, OPERATOR, call, ok  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

TASKS = int(os.environ.get("BENCH_TASKS", "60"))


def main():
    run = uuid.uuid4().hex[:10]
    acct = ok(call("POST", "/admin/v1/accounts", OPERATOR, {
        "request_id": f"bench-{run}", "name": f"Bench {run}", "plan": "enterprise",
        "retention_days": 90, "max_concurrency": 8, "min_batch_size": 1}))["id"]
    ok(call("POST", f"/admin/v1/accounts/{acct}/grants", OPERATOR, {
        "request_id": f"bench-{run}-c", "pack": "pack_10000", "reason": "bench"}))
    key = ok(call("POST", f"/admin/v1/accounts/{acct}/api-keys", OPERATOR, {
        "request_id": f"bench-{run}-k", "name": "bench", "scopes": ["read", "batches:write"]}))["secret"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                              headless=True, args=["--no-sandbox"])
        page = b.new_page()
        page.goto(f"{API}/console")
        page.fill("#key", key)
        page.click("form button[type=submit]")
        page.wait_for_selector("#nav a[data-route=ledger]")
        page.click("#nav a[data-route=ledger]")
        page.wait_for_selector("#live")
        page.evaluate("""() => {
          window.__seen = {};
          new MutationObserver((ms) => { for (const m of ms) for (const n of m.addedNodes)
            if (n.dataset && n.dataset.kind === 'refund') window.__seen[n.dataset.seq] = Date.now(); })
            .observe(document.querySelector('#ledger-rows'), { childList: true });
        }""")
        tasks = [{"prompt": f"bench {i}"} for i in range(TASKS)]
        batch = ok(call("POST", "/v1/batches", key, {"request_id": f"bench-{run}-b", "model": "sora-2", "tasks": tasks}))
        page.wait_for_selector(f"tr[data-kind=pre_deduct] >> text={batch['id']}")
        while ok(call("GET", f"/v1/batches/{batch['id']}", key))["status"] != "completed":
            page.wait_for_timeout(1000)  # the benchmark waits for the batch; no assertion hangs on it
        page.wait_for_timeout(3000)  # the last poll's rows
        seen = page.evaluate("() => window.__seen")
        b.close()
    entries = [e for e in call("GET", "/v1/credits/ledger?kind=refund&limit=200", key)[1]["data"]]
    delays = []
    for e in entries:
        at = seen.get(str(e["seq"]))
        if at is None:
            continue
        created = datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")).timestamp() * 1000
        delays.append(at - created)
    if not delays:
        print("no refunds seen: raise SIM_FAIL_RATE or BENCH_TASKS")
        return
    delays.sort()
    p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
    print(f"live ledger: {len(delays)} refunds of {len(entries)} seen; delay median "
          f"{statistics.median(delays):.0f} ms, p95 {p95:.0f} ms, max {delays[-1]:.0f} ms")


if __name__ == "__main__":
    main()
