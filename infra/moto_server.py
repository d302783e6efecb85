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
import base64
import io
import json
import os
import sys
import threading
from urllib.parse import parse_qs, unquote

from waitress.server import create_server

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    create_backend_app,
)

_DYNAMODB_LOCK = threading.Lock()
# Capacity units (below) are measured only when asked for ($EMULATOR_MEASURE_UNITS=1, as the
# pipeline benchmark does): each write then reads its item before and after and each read
# sizes what it returned, work AWS does not make the caller wait for, which slows every
# request of the local stack and of the tests.
_MEASURE_UNITS = os.environ.get("EMULATOR_MEASURE_UNITS") == "1"
_COUNTS_LOCK = threading.Lock()
_COUNTS: dict = {}
# The same counts per access key id: each function (and each test's app) signs with its own,
# so a test can ask what one of them did (GET /_launcher/stats?key=AKID, or ?prefix=AKIDx for
# every id that starts so).
_COUNTS_BY_KEY: dict = {}
# What each access key id needed IAM to allow: (action, resource) as IAM evaluates them, e.g.
# ("dynamodb:PutItem", "table/Ledger") for every item of a transaction. Resource names lose
# their test prefix (everything up to the last "-"), object keys keep their shape only
# ("accounts/*/exports/*"). GET /_launcher/grants serves them; with $EMULATOR_GRANTS_LOG set,
# each new one is also appended to that file as a JSON line, so a whole test run adds up.
_GRANTS: dict = {}
_GRANTS_LOG = os.environ.get("EMULATOR_GRANTS_LOG")


_SERVICES = {
    "DynamoDB": "dynamodb",
    "AmazonSQS": "sqs",
    "secretsmanager": "secretsmanager",
    "TrentService": "kms",
}


def _operation(environ) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        # "DynamoDB_20120810.GetItem" -> "dynamodb.GetItem"; "AmazonSQS.SendMessage" -> "sqs.SendMessage"
        service, _, op = target.partition(".")
        return _SERVICES.get(service.split("_")[0], service) + "." + op
    return "s3." + environ.get("REQUEST_METHOD", "?")


def _short(name: str) -> str:
    """A table, queue or bucket name without the prefix a test or the local stack gave it."""
    return name.rsplit("/", 1)[-1].rsplit("-", 1)[-1].lower()


def _key_shape(key: str) -> str:
    parts = key.split("/")
    if parts[0] == "accounts" and len(parts) > 3:
        return f"accounts/*/{parts[2]}/*"
    return parts[0] + "/*"


_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


def _grants(environ, op: str, body: bytes) -> list:
    """The (action, resource) pairs IAM would check for this request."""
    service, _, name = op.partition(".")
    if service == "dynamodb":
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return []
        if name in ("TransactWriteItems", "TransactGetItems"):
            out = []
            for item in req.get("TransactItems", []):
                for kind, inner in item.items():
                    table = _short(inner.get("TableName", "?"))
                    out.append((f"dynamodb:{_TRANSACT_ACTIONS.get(kind, kind)}", f"table/{table}"))
            return out
        if name in ("BatchWriteItem", "BatchGetItem"):
            return [(f"dynamodb:{name}", f"table/{_short(t)}") for t in req.get("RequestItems", {})]
        table = req.get("TableName")
        if table is None:
            return [(f"dynamodb:{name}", "*")]
        resource = f"table/{_short(table)}"
        if req.get("IndexName"):
            resource += f"/index/{req['IndexName']}"
        return [(f"dynamodb:{name}", resource)]
    if service == "sqs":
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return []
        queue = req.get("QueueUrl") or req.get("QueueName") or "*"
        # IAM authorises the batch calls as their single forms (sqs:SendMessage, ...).
        action = name.removesuffix("Batch")
        return [(f"sqs:{action}", f"queue/{_short(queue)}")]
    if service == "secretsmanager":
        try:
            secret = json.loads(body or b"{}").get("SecretId", "*")
        except ValueError:
            secret = "*"
        return [(f"secretsmanager:{name}", f"secret/{secret}")]
    if service == "kms":
        return [(f"kms:{name}", "key/*")]
    # S3, path style: /bucket/key?query
    path = unquote(environ.get("PATH_INFO", "/")).lstrip("/")
    bucket, _, key = path.partition("/")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    method = environ.get("REQUEST_METHOD", "GET")
    if not key:
        if method == "POST" and "delete" in query:
            return [("s3:DeleteObject", f"bucket/{_short(bucket)}/?")]
        return [("s3:ListBucket", f"bucket/{_short(bucket)}")]
    resource = f"bucket/{_short(bucket)}/{_key_shape(key)}"
    if "tagging" in query:
        action = {"GET": "s3:GetObjectTagging", "PUT": "s3:PutObjectTagging"}.get(method, "s3:DeleteObjectTagging")
    elif method in ("GET", "HEAD"):
        action = "s3:GetObject"
    elif method == "DELETE":
        action = "s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject"
    else:
        # PUT, and the multipart upload's POSTs: all s3:PutObject to IAM.
        action = "s3:PutObject"
    out = [(action, resource)]
    if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
        source = unquote(environ["HTTP_X_AMZ_COPY_SOURCE"]).lstrip("/")
        b, _, k = source.partition("/")
        out.append(("s3:GetObject", f"bucket/{_short(b)}/{_key_shape(k)}"))
    return out


def _record(akid: str, grants: list) -> None:
    new = []
    with _COUNTS_LOCK:
        seen = _GRANTS.setdefault(akid, set())
        for g in grants:
            if g not in seen:
                seen.add(g)
                new.append(g)
        if new and _GRANTS_LOG:
            with open(_GRANTS_LOG, "a", encoding="utf-8") as f:
                for action, resource in new:
                    f.write(json.dumps({"key": akid, "action": action, "resource": resource}) + "\n")


def _access_key_id(environ) -> str:
    """The access key id a request was signed with: from the SigV4 `Authorization` header,
    or from a presigned URL's `X-Amz-Credential`."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker in auth:
        return auth.split(marker, 1)[1].split("/", 1)[0]
    cred = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential", [""])[0]
    return cred.split("/", 1)[0] or "-"


# Capacity units, as DynamoDB would bill them on demand, measured from the items themselves
# (moto's own ConsumedCapacity is a constant): a write costs 1 unit per KB of the larger of
# the item before and after (a refused conditional write too), and twice in a transaction; a
# read 1 unit per 4 KB read (half when eventually consistent). A global index costs writes
# only when its entry changes, as DynamoDB bills them: one when an item enters or leaves the
# index or a projected attribute changes, two when an index key changes (the old entry
# deleted, the new one put), per KB of the entry; an update of attributes the index does not
# project (a KEYS_ONLY index: any attribute but the keys) costs the index nothing. Counted per
# access key id, in thousandths of a unit so the counts stay integers, as the
# pseudo-operations `dynamodb.write_milliunits` and `dynamodb.read_milliunits`.
_ACCOUNT = "123456789012"


def _table(name: str):
    from moto.dynamodb.models import dynamodb_backends

    region = os.environ.get("AWS_REGION", "us-east-1")
    try:
        return dynamodb_backends[_ACCOUNT][region].get_table(name)
    except Exception:  # an unknown table: the request fails and costs nothing
        return None


def _item(table, key: dict):
    from moto.dynamodb.models.dynamo_type import DynamoType

    try:
        h = DynamoType(key[table.hash_key_attr])
        r = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        return table.get_item(h, r)
    except Exception:
        return None


def _size(table, key: dict) -> int:
    item = _item(table, key)
    return item.size() if item is not None else 0


def _index_entries(table, item) -> list:
    """Per global index: (its key attributes' values, the projected entry and its size), or
    None when the item is not in that index (an index key attribute is missing: sparse)."""
    out = []
    for index in getattr(table, "global_indexes", []) or []:
        keys = [k["AttributeName"] for k in index.schema]
        if item is None or any(k not in item.attrs for k in keys):
            out.append(None)
            continue
        entry = index.project(item)
        key_values = json.dumps({k: item.attrs[k].to_json() for k in keys}, sort_keys=True)
        out.append((key_values, json.dumps(entry.to_json(), sort_keys=True), entry.size()))
    return out


def _index_units(before: list, after: list) -> float:
    def kb(size: int) -> int:
        return max(1, -(-size // 1024))

    units = 0
    for b, a in zip(before, after):
        if b is None and a is None:
            continue
        if b is None or a is None:
            units += kb((a or b)[2])
        elif b[0] != a[0]:
            units += kb(b[2]) + kb(a[2])
        elif b[1] != a[1]:
            units += kb(a[2])
    return units


def _writes(op: str, body: dict) -> list:
    """(table name, key or item, factor) for every item a write request touches."""
    if op in ("PutItem",):
        return [(body.get("TableName"), body.get("Item", {}), 1)]
    if op in ("UpdateItem", "DeleteItem"):
        return [(body.get("TableName"), body.get("Key", {}), 1)]
    if op == "TransactWriteItems":
        out = []
        for t in body.get("TransactItems", []):
            for kind, spec in t.items():
                out.append((spec.get("TableName"), spec.get("Item") or spec.get("Key") or {}, 2))
        return out
    if op == "BatchWriteItem":
        out = []
        for name, reqs in body.get("RequestItems", {}).items():
            for r in reqs:
                spec = r.get("PutRequest") or r.get("DeleteRequest") or {}
                out.append((name, spec.get("Item") or spec.get("Key") or {}, 1))
        return out
    return []


def _units_before(op: str, body: dict) -> list:
    """Before the write: each touched item's table, key, size and index entries."""
    out = []
    for name, key, factor in _writes(op, body):
        table = _table(name or "")
        if table is None:
            continue
        item = _item(table, key)
        before = item.size() if item is not None else 0
        out.append((table, key, factor, before, _index_entries(table, item)))
    return out


def _write_units(touched: list) -> dict:
    """Write units per table (its name without the test prefix), its indexes' included."""
    per_table: dict = {}
    for table, key, factor, before, entries in touched:
        item = _item(table, key)
        after = item.size() if item is not None else 0
        kb = max(1, -(-max(before, after) // 1024))
        index = _index_units(entries, _index_entries(table, item))
        name = table.name.rsplit("-", 1)[-1]
        per_table[name] = per_table.get(name, 0.0) + factor * (kb + index)
    return per_table


def _read_units(op: str, body: dict, response: bytes) -> float:
    half = 1.0 if body.get("ConsistentRead") else 0.5
    if op == "GetItem":
        table = _table(body.get("TableName", ""))
        size = _size(table, body.get("Key", {})) if table is not None else 0
        return half * max(1, -(-size // 4096))
    if op == "Query":
        table = _table(body.get("TableName", ""))
        try:
            items = json.loads(response or b"{}").get("Items", [])
        except ValueError:
            items = []
        size = sum(_size(table, i) for i in items) if table is not None else 0
        return half * max(1, -(-size // 4096))
    if op == "BatchGetItem":
        units = 0.0
        for name, spec in body.get("RequestItems", {}).items():
            table = _table(name)
            h = 1.0 if spec.get("ConsistentRead") else 0.5
            for key in spec.get("Keys", []):
                size = _size(table, key) if table is not None else 0
                units += h * max(1, -(-size // 4096))
        return units
    return 0.0


def _add_units(akid: str, name: str, units: float) -> None:
    units = round(units * 1000)
    if not units:
        return
    with _COUNTS_LOCK:
        _COUNTS[name] = _COUNTS.get(name, 0) + units
        per_key = _COUNTS_BY_KEY.setdefault(akid, {})
        per_key[name] = per_key.get(name, 0) + units


class SerialisedDynamoDB:
    """Also counts requests per operation, for the benchmark (GET /_launcher/stats, and
    POST /_launcher/stats to reset), in total and per access key id (`?key=AKID`)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_launcher/stats":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            key = query.get("key", [None])[0]
            prefix = query.get("prefix", [None])[0]
            with _COUNTS_LOCK:
                if prefix is not None:
                    counts = {}
                    for k, per_key in _COUNTS_BY_KEY.items():
                        if k.startswith(prefix):
                            for op, n in per_key.items():
                                counts[op] = counts.get(op, 0) + n
                else:
                    counts = _COUNTS if key is None else _COUNTS_BY_KEY.get(key, {})
                body = json.dumps(counts).encode()
                if environ.get("REQUEST_METHOD") == "POST":
                    counts.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if environ.get("PATH_INFO") == "/_launcher/grants":
            with _COUNTS_LOCK:
                body = json.dumps({k: sorted(v) for k, v in _GRANTS.items()}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        op = _operation(environ)
        key = _access_key_id(environ)
        body = b""
        if environ.get("HTTP_X_AMZ_TARGET"):
            # JSON protocols: read the (small) body to see the tables and queues it names,
            # then hand moto the same bytes.
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
        _record(key, _grants(environ, op, body))
        with _COUNTS_LOCK:
            _COUNTS[op] = _COUNTS.get(op, 0) + 1
            per_key = _COUNTS_BY_KEY.setdefault(key, {})
            per_key[op] = per_key.get(op, 0) + 1
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB_"):
            return self.app(environ, start_response)
        name = op.split(".", 1)[1]
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        with _DYNAMODB_LOCK:
            touched = _units_before(name, request) if _MEASURE_UNITS else []
            # Materialise the whole body under the lock: moto builds it lazily.
            response = list(self.app(environ, start_response))
            if _MEASURE_UNITS:
                for table, units in _write_units(touched).items():
                    _add_units(key, "dynamodb.write_milliunits", units)
                    _add_units(key, f"dynamodb.write_milliunits.{table}", units)
                read = _read_units(name, request, b"".join(response))
                _add_units(key, "dynamodb.read_milliunits", read)
        return response


# The services the local stack calls, by SigV4 credential scope.
_BACKENDS = {"dynamodb", "sqs", "s3", "kms", "secretsmanager"}


def _service_of(environ):
    """The moto backend a request is for: its `X-Amz-Target` prefix, else the service in its
    SigV4 credential scope (`Credential=AKID/date/region/SERVICE/aws4_request`, in the
    `Authorization` header or a presigned URL's query); None when neither says."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        service = _SERVICES.get(target.partition(".")[0].split("_")[0])
        return service if service in _BACKENDS else None
    scope = environ.get("HTTP_AUTHORIZATION", "").partition("Credential=")[2]
    if not scope:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        scope = query.get("X-Amz-Credential", [""])[0]
    parts = scope.split(",")[0].split("/")
    service = parts[3] if len(parts) > 4 else None
    return service if service in _BACKENDS else None


class Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher finds each request's service by scanning its service modules (a
    tenth of the emulator's time under load); the request's signature names it outright.
    Anything unsigned or unknown goes moto's way."""

    def get_application(self, environ):
        service = _service_of(environ)
        if service is None:
            return super().get_application(environ)
        app = self.app_instances.get(service)
        if app is None:
            with self.lock:
                app = self.app_instances.get(service) or self.create_app(service)
                self.app_instances[service] = app
        return app


def _patch_sqs_retention() -> None:
    """moto checks each received message's retention by computing every attribute of its
    queue (message counts included, so a receive costs the square of the queue's depth);
    the check needs the retention period only."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    def retained(self, queue_name, message) -> bool:
        period = int(self.get_queue(queue_name).message_retention_period)
        return period + message.sent_timestamp / 1000 > unix_time()

    SQSBackend.is_message_valid_based_on_retention_period = retained


def _patch_transaction_backup() -> None:
    """Before a transaction, moto backs up each table it names by deep-copying the whole
    table, once per item: a transaction of ten task records copied the tasks table ten times,
    a cost that grows with the table and that DynamoDB does not have. One copy per table and
    transaction is the same backup (the copies are all taken before any item is applied)."""
    import copy as real_copy

    import moto.dynamodb.models as models

    local = threading.local()

    class OncePerTransaction:
        def __getattr__(self, name):
            return getattr(real_copy, name)

        def deepcopy(self, obj, *args, **kwargs):
            taken = getattr(local, "taken", None)
            if taken is None:
                return real_copy.deepcopy(obj, *args, **kwargs)
            if id(obj) not in taken:
                # The original stays referenced, so its id is not reused meanwhile.
                taken[id(obj)] = (obj, real_copy.deepcopy(obj, *args, **kwargs))
            return taken[id(obj)][1]

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        local.taken = {}
        try:
            return original(self, transact_items)
        finally:
            local.taken = None

    models.copy = OncePerTransaction()
    models.DynamoDBBackend.transact_write_items = transact_write_items


# The DynamoDB operations whose results are already in their wire form (attribute values as
# {type: value} maps, counts, ConsumedCapacity, keys) once moto has converted its items.
_WIRE_READY = {
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
}
# $EMULATOR_VERIFY_SERIALIZER=1: serialise every such result both ways, answer with moto's,
# and print each difference to standard error (how the shortcut below was checked).
_VERIFY_SERIALIZER = os.environ.get("EMULATOR_VERIFY_SERIALIZER") == "1"


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _wire_json(value):
    """Binary attribute values are raw bytes in moto's results; on the wire, base64."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _patch_dynamodb_serializer() -> None:
    """moto serialises each response by walking the operation's botocore output shape,
    member by member: half of the time the DynamoDB lock is held under the local stack's
    load. For the item operations the result is already what goes on the wire (moto drops
    absent members, which this does too), so one `json.dumps` gives the same document.
    Anything else, errors included, and any result `json.dumps` cannot take (a timestamp)
    goes moto's way."""
    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoHandler, DynamoResult

    original = DynamoHandler.serialized

    def serialized(self, action_result):
        result = action_result.result
        if (
            # Exactly these: a subclass (a paginated result) does more than serialise.
            type(action_result) not in (ActionResult, DynamoResult)
            or not isinstance(result, dict)
            or self._get_action() not in _WIRE_READY
        ):
            return original(self, action_result)
        try:
            body = json.dumps(_without_nulls(result), default=_wire_json)
        except TypeError:
            return original(self, action_result)
        if _VERIFY_SERIALIZER:
            status, headers, theirs = original(self, action_result)
            if status != 200 or json.loads(theirs) != json.loads(body):
                print(
                    f"SERIALIZER MISMATCH {self._get_action()} ours={body} moto={theirs}",
                    file=sys.stderr,
                    flush=True,
                )
            return status, headers, theirs
        headers = {"Content-Type": "application/x-amz-json-1.0"}
        headers.update(self.response_headers)
        return 200, headers, body

    DynamoHandler.serialized = serialized


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

    _patch_sqs_retention()
    _patch_transaction_backup()
    _patch_dynamodb_serializer()
    app = SerialisedDynamoDB(Dispatcher(create_backend_app))
    # waitress, not werkzeug's development server: werkzeug closes the connection after every
    # response, so each AWS call paid a TCP connect and close (a third of a client's CPU) that
    # AWS, which keeps connections alive, does not charge. Threads: an SQS long poll holds one
    # for up to 20 s, so there are enough for every poller of the local stack and the tests.
    server = create_server(
        app,
        host=args.host,
        port=args.port,
        threads=64,
        connection_limit=2000,
        asyncore_use_poll=True,
        channel_timeout=300,
        ident="moto",
    )
    port = server.effective_port
    os.environ["MOTO_PORT"] = str(port)

    if args.watch_stdin:

        def watch() -> None:
            sys.stdin.read()
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()

    print(f"READY {port}", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
