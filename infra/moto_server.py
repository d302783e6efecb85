"""Our launcher for the AWS emulator (moto server) on loopback.

Why not plain `moto_server`: moto keeps its DynamoDB state in dicts without a lock, so
concurrent transactions fail with HTML 500s ("dictionary changed size during iteration").
Real DynamoDB serialises conflicting writes itself; here we serialise every DynamoDB request
with one lock. SQS and S3 requests never take that lock, so a 20 s SQS long poll does not
stall the tables.

It prints one line, `READY <port>`, once it is listening (port 0 picks a free one), and it
exits when its standard input closes: a test process that dies still takes the emulator
with it.
"""

import argparse
import os
import sys
import threading

from werkzeug.serving import make_server

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    create_backend_app,
)

_DYNAMODB_LOCK = threading.Lock()
_COUNTS_LOCK = threading.Lock()
_COUNTS: dict = {}
# The same counts per access key id: each function (and each test's app) signs with its own,
# so a test can ask what one of them did (GET /_launcher/stats?key=AKID).
_COUNTS_BY_KEY: dict = {}


def _operation(environ) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        # "DynamoDB_20120810.GetItem" -> "dynamodb.GetItem"; "AmazonSQS.SendMessage" -> "sqs.SendMessage"
        service, _, op = target.partition(".")
        return ("dynamodb." if service.startswith("DynamoDB") else "sqs.") + op
    return "s3." + environ.get("REQUEST_METHOD", "?")


def _access_key_id(environ) -> str:
    """The access key id a request was signed with: from the SigV4 `Authorization` header,
    or from a presigned URL's `X-Amz-Credential`."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker in auth:
        return auth.split(marker, 1)[1].split("/", 1)[0]
    from urllib.parse import parse_qs

    cred = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential", [""])[0]
    return cred.split("/", 1)[0] or "-"


class SerialisedDynamoDB:
    """Also counts requests per operation, for the benchmark (GET /_launcher/stats, and
    POST /_launcher/stats to reset), in total and per access key id (`?key=AKID`)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_launcher/stats":
            import json
            from urllib.parse import parse_qs

            key = parse_qs(environ.get("QUERY_STRING", "")).get("key", [None])[0]
            with _COUNTS_LOCK:
                counts = _COUNTS if key is None else _COUNTS_BY_KEY.get(key, {})
                body = json.dumps(counts).encode()
                if environ.get("REQUEST_METHOD") == "POST":
                    counts.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        op = _operation(environ)
        key = _access_key_id(environ)
        with _COUNTS_LOCK:
            _COUNTS[op] = _COUNTS.get(op, 0) + 1
            per_key = _COUNTS_BY_KEY.setdefault(key, {})
            per_key[op] = per_key.get(op, 0) + 1
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with _DYNAMODB_LOCK:
            # Materialise the whole body under the lock: moto builds it lazily.
            return list(self.app(environ, start_response))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="exit when standard input reaches end of file",
    )
    args = parser.parse_args()
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        sys.exit("moto_server.py binds to loopback only")

    app = SerialisedDynamoDB(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True)
    os.environ["MOTO_PORT"] = str(server.port)

    if args.watch_stdin:

        def watch() -> None:
            sys.stdin.read()
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()

    print(f"READY {server.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
