"""Sums a flat `perf report --sort dso,symbol` (on standard input) by component, so a profile
of the API reads as "where does a request's CPU go" (scripts/bench.sh, BENCH=profile)."""

import collections
import re
import sys

GROUPS = [
    (r"aws_sig|sha2|hmac", "AWS request signing (SigV4, SHA-256)"),
    (r"aws_smithy|aws_sdk|aws_runtime|aws_types|aws_config|aws_credential",
     "AWS SDK orchestration and (de)serialisation"),
    (r"hyper|h2::|http::|httparse|tower", "HTTP (hyper, http, tower)"),
    (r"tokio|mio|futures", "tokio runtime"),
    (r"serde|json|ryu|itoa", "serde / JSON"),
    (r"tracing", "tracing"),
    (r"axum|matchit", "axum routing"),
    (r"api::|shared::", "our code (api, shared)"),
    (r"__rust|alloc|core::|std::", "Rust std / alloc / fmt"),
]


def component(rest: str) -> str:
    if "[kernel" in rest:
        return "kernel (network stack, scheduling)"
    if re.search(r"libc|libm|vdso", rest):
        return "libc (malloc / free, memmove)"
    symbol = rest.split("[.]", 1)[-1]
    for pattern, name in GROUPS:
        if re.search(pattern, symbol):
            return name
    return "other"


def main() -> None:
    totals: collections.Counter = collections.Counter()
    for line in sys.stdin:
        m = re.match(r"\s*([0-9.]+)%\s+(.*)", line)
        if m:
            totals[component(m.group(2))] += float(m.group(1))
    for name, pct in totals.most_common():
        print(f"BENCH profile {pct:5.1f}%  {name}")


if __name__ == "__main__":
    main()
