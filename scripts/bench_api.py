"""The API's CPU per request and its cold start (scripts/bench.sh, BENCH=api).

Run against an API process on the local stack: its own account and key (through the operator
API), then N requests of each of the five most common routes, one after another on one
keep-alive connection, reading the API process's CPU time (user + system, every thread, from
/proc/PID/stat) before and after each route. Then the cold start: the same binary started
RUNS times on another port, the time from exec to the first /health answer, and its resident
memory then.

Usage: bench_api.py API_URL OPERATOR_CREDENTIAL API_PID API_BIN [N] [RUNS]
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line (12 and 13 after the name).
    return (int(fields[11]) + int(fields[12])) / TICK


class Client:
    def __init__(self, api: str):
        u = urllib.parse.urlparse(api)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def call(self, method: str, path: str, token: str, body=None):
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise SystemExit(f"{method} {path}: {resp.status} {raw[:300]!r}")
        return json.loads(raw) if raw else None


def setup(c: Client, operator: str) -> tuple[str, str]:
    run = uuid.uuid4().hex[:12]
    for cidr in ("127.0.0.0/8", "::1"):
        c.call("POST", "/admin/v1/ip-block-exemptions", operator,
               {"cidr": cidr, "reason": "the API benchmark on the local stack"})
    acct = c.call("POST", "/admin/v1/accounts", operator, {
        "request_id": f"bench-{run}", "name": f"API benchmark {run}", "plan": "enterprise",
        "retention_days": 30, "max_concurrency": 4, "min_batch_size": 1,
    })["id"]
    c.call("PATCH", f"/admin/v1/accounts/{acct}", operator, {"request_budget_per_min": 60000})
    c.call("POST", f"/admin/v1/accounts/{acct}/grants", operator, {
        "request_id": f"bench-{run}-credits", "pack": "pack_10000", "reason": "API benchmark",
    })
    key = c.call("POST", f"/admin/v1/accounts/{acct}/api-keys", operator, {
        "request_id": f"bench-{run}-key", "name": "bench",
        "scopes": ["read", "batches:write"], "rate_limit_per_min": 60000,
    })["secret"]
    return acct, key


def cold_start(api_bin: str, runs: int) -> tuple[list[float], list[int]]:
    times, rss = [], []
    for i in range(runs):
        port = 3900 + i
        env = dict(os.environ, PORT=str(port))
        t0 = time.perf_counter()
        p = subprocess.Popen([api_bin], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    if p.poll() is not None:
                        raise SystemExit(f"{api_bin} exited with {p.returncode}")
                    time.sleep(0.0005)
            times.append((time.perf_counter() - t0) * 1000)
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss.append(int(line.split()[1]))
        finally:
            p.terminate()
            p.wait()
    return times, rss


def main() -> None:
    api, operator, pid, api_bin = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 500
    runs = int(sys.argv[6]) if len(sys.argv) > 6 else 15
    c = Client(api)
    _, key = setup(c, operator)
    tasks = [{"prompt": f"A paper boat drifting down a rainy street, shot {i}"} for i in range(10)]
    batch = c.call("POST", "/v1/batches", key,
                   {"request_id": "bench-first", "model": "sora-2", "tasks": tasks})["id"]
    counter = iter(range(10**9))
    routes = [
        ("GET /v1/credits", lambda: c.call("GET", "/v1/credits", key)),
        ("GET /v1/batches/{id}", lambda: c.call("GET", f"/v1/batches/{batch}", key)),
        ("GET /v1/credits/ledger", lambda: c.call("GET", "/v1/credits/ledger?limit=50", key)),
        ("GET /v1/batches/{id}/tasks", lambda: c.call("GET", f"/v1/batches/{batch}/tasks", key)),
        ("POST /v1/batches (10 tasks)", lambda: c.call("POST", "/v1/batches", key, {
            "request_id": f"bench-{next(counter)}", "model": "sora-2", "tasks": tasks})),
    ]
    only = os.environ.get("BENCH_ROUTES")  # e.g. "GET /v1/credits" (to profile one route)
    if only:
        routes = [r for r in routes if r[0] in only.split(",")]
    print(f"BENCH api requests_per_route={n}")
    for name, call in routes:
        for _ in range(20):  # warm the connection, the caches and the emulator's pages
            call()
        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        for _ in range(n):
            call()
        cpu, wall = cpu_seconds(pid) - cpu0, time.perf_counter() - t0
        print(f"BENCH api route={name!r} cpu_ms_per_request={cpu * 1000 / n:.2f} "
              f"wall_ms_per_request={wall * 1000 / n:.2f}")
    if runs == 0:
        return
    times, rss = cold_start(api_bin, runs)
    print(f"BENCH api cold_start runs={runs} median_ms={statistics.median(times):.1f} "
          f"max_ms={max(times):.1f} rss_median_mib={statistics.median(rss) / 1024:.1f}")


if __name__ == "__main__":
    main()
