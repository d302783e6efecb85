"""Verifies webhook deliveries with the `standardwebhooks` library (PyPI, pinned in
infra/requirements.txt): an implementation of the Standard Webhooks specification that is
not ours. Reads {"now": unix_secs, "cases": [{"secret", "headers", "body"}]} on stdin and
prints a JSON list with "ok" or the library's error for each case. `now` stands in for the
clock the library reads, so tests with a manual clock can check timestamps too."""

import json
import sys
from datetime import datetime, timezone

import standardwebhooks.webhooks as sw

request = json.load(sys.stdin)
now = request["now"]


class FixedNow(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.fromtimestamp(now, tz=timezone.utc)


sw.datetime = FixedNow

results = []
for case in request["cases"]:
    try:
        sw.Webhook(case["secret"]).verify(case["body"], case["headers"])
        results.append("ok")
    except Exception as e:  # the library's verdict, whatever its type
        results.append(f"{type(e).__name__}: {e}")
print(json.dumps(results))
