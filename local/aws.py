"""Local AWS: moto on loopback, provisioned from what template.yaml declares.

The template is the single list of resources: every DynamoDB table, SQS queue and
Secrets Manager secret it declares is created in moto, and the functions' environment
(Globals.Function.Environment) is resolved against those local resources.

Moto's DynamoDB is patched to behave as DynamoDB does where the stack depends on it: atomic
conditional writes, exact numbers, transactions that cost what their items cost, and items that
expire by the table's TTL attribute (a sweep every TTL_SWEEP_SECONDS); and moto keeps no copy of
every item version and message it made, so a long local session stays as fast and as small as a
new one.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
from cfn_tools import load_yaml  # type: ignore[import-untyped]

REGION = "us-east-1"
ACCOUNT = "123456789012"
TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
# DynamoDB deletes expired items within days; locally a short period keeps the table at its live size.
TTL_SWEEP_SECONDS = 10.0
# DynamoDB's TTL ignores a timestamp more than five years in the past (a value in the wrong unit).
TTL_MAX_AGE_SECONDS = 5 * 365 * 24 * 3600

# boto3 inside the functions reads these; moto accepts any credentials.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@dataclass
class LocalAws:
    """Moto running on loopback plus what was created in it from the template."""

    server: Any
    endpoint: str
    physical: dict[str, str] = field(default_factory=dict)  # logical id -> name, URL or ARN
    arns: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)  # the template's, overrides applied
    environment: dict[str, str] = field(default_factory=dict)  # the functions' variables, resolved
    _stopping: threading.Event = field(default_factory=threading.Event)
    _sweeper: threading.Thread | None = None

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)  # type: ignore[call-overload]

    def start_ttl_sweeper(self, every: float = TTL_SWEEP_SECONDS) -> None:
        def sweep() -> None:
            while not self._stopping.wait(every):
                try:
                    sweep_expired()
                except Exception:  # a sweep that failed is retried on the next period
                    logging.getLogger("local.aws").warning("TTL sweep failed", exc_info=True)

        self._sweeper = threading.Thread(target=sweep, name="dynamodb-ttl", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join()
        self.server.stop()


_WRITE_LOCK = threading.RLock()


def _atomic_dynamodb_writes() -> None:
    """Make moto's DynamoDB writes atomic, as DynamoDB's are.

    Moto serves requests on threads and checks a ConditionExpression and applies the write in two
    steps, so two racing conditional writes can both succeed: budgets and job transitions would be
    tested against a weaker database than the real one. One lock around each write closes that gap.
    """
    from moto.dynamodb.models import DynamoDBBackend

    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_atomic", False):
            continue

        def locked(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _WRITE_LOCK:
                return _original(*args, **kwargs)

        locked._atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, locked)


def _transactions_copy_their_items() -> None:
    """Make a TransactWriteItems cost what its items cost, not what the whole table costs.

    Moto (5.2) deep-copies every table a transaction names before applying it, to roll back on a
    failed condition: on a table that holds every rate-limit window, usage day and job, each
    admission grows slower and the process larger. Here moto's copy of a table is the table itself,
    and the items the transaction names are copied instead and put back if it fails. Correctness
    rests on that item copy alone, so a moto that copies differently only costs time, never state.
    """
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    original = models.DynamoDBBackend.transact_write_items
    if getattr(original, "_item_scoped", False):
        return

    class _TableKeepingCopy:
        """The `copy` module as moto's DynamoDB backend module sees it: tables are not duplicated."""

        @staticmethod
        def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

        copy = staticmethod(copy.copy)

    setattr(models, "copy", _TableKeepingCopy)  # noqa: B010 - mypy does not see the module's import

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with _WRITE_LOCK:  # the saved items must be the ones the transaction saw
            saved = []
            for entry in transact_items:
                target = _target(self, entry)
                if target is not None:
                    table, hash_key, range_key = target
                    saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
            try:
                original(self, transact_items)
            except Exception:
                for table, hash_key, range_key, item in reversed(saved):
                    _restore(table, hash_key, range_key, item)
                raise

    transact_write_items._item_scoped = True  # type: ignore[attr-defined]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _clause_counts_in_one_pass() -> None:
    """Make moto's check that an UpdateExpression has one ADD, REMOVE and SET clause at most linear.

    Moto's ActionCountValidator lists the clauses below every node of the expression's tree, and
    the tree nests once per action, so a settlement's dozens of ADD actions cost a quadratic number
    of visits: a seventh of moto's time in the jobs benchmark. Here each node's counts are summed
    from its children's, in the same order (children first) and with the same rules (a clause is
    counted, not descended into; only expressions and functions are descended into), so the same
    expressions are refused with the same message.
    """
    from moto.dynamodb.exceptions import TooManyClauses
    from moto.dynamodb.parsing import ast_nodes
    from moto.dynamodb.parsing.validators import ActionCountValidator

    ast: Any = ast_nodes  # moto's module is untyped ("type: ignore" at its top)

    if getattr(ActionCountValidator.traverse, "_one_pass", False):
        return
    kinds = (
        (ast.UpdateExpressionAddClause, "ADD"),
        (ast.UpdateExpressionRemoveClause, "REMOVE"),
        (ast.UpdateExpressionSetClause, "SET"),
    )
    descended = (ast.Expression, ast.UpdateExpressionFunction)

    def counts(node: Any) -> list[int]:
        found = [0] * len(kinds)
        for child in node.children or []:
            if not isinstance(child, ast.Node):
                continue
            below = counts(child)
            for i, (kind, _) in enumerate(kinds):
                found[i] += 1 if type(child) is kind else below[i] if isinstance(child, descended) else 0
        if isinstance(node, ast.UpdateExpression):
            for count, (_, name) in zip(found, kinds, strict=True):
                if count > 1:
                    raise TooManyClauses(name)
        return found

    def traverse(self: Any, node: Any) -> Any:
        if isinstance(node, ast.Node):
            counts(node)
        return node

    traverse._one_pass = True  # type: ignore[attr-defined]
    ActionCountValidator.traverse = traverse  # type: ignore[method-assign]


def _target(backend: Any, entry: dict[str, Any]) -> tuple[Any, Any, Any] | None:
    """The table and key one transaction operation writes; None if malformed (moto rejects it unwritten)."""
    try:
        _, op = next(iter(entry.items()))
        table = backend.get_table(op["TableName"])
        keys = op.get("Key") or {attr: op["Item"][attr] for attr in (table.hash_key_attr, table.range_key_attr) if attr}
        hash_key, range_key = backend.get_keys_value(table, keys)
    except Exception:
        return None
    return table, hash_key, range_key


def _restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    """Put an item back as it was (None: absent), without recording a write."""
    if range_key is None:
        if item is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = item
    elif item is None:
        table.items.get(hash_key, {}).pop(range_key, None)
    else:
        table.items[hash_key][range_key] = item


def sweep_expired(now: float | None = None) -> int:
    """Delete the items whose TTL attribute has passed, in every table with TTL enabled.

    What DynamoDB's TTL does (a Number of epoch seconds, ignored if not a Number or more than five
    years old), so locally the table holds what it would hold deployed. Returns how many went.
    """
    from moto.dynamodb.models import dynamodb_backends

    now = time.time() if now is None else now
    removed = 0
    with _WRITE_LOCK:
        for table in dynamodb_backends[ACCOUNT][REGION].tables.values():
            if table.ttl.get("TimeToLiveStatus") != "ENABLED":
                continue
            name = table.ttl["AttributeName"]
            expired = []
            for entry in table.items.values():
                items: Iterable[Any] = entry.values() if table.has_range_key else (entry,)
                for item in items:
                    value = item.attrs.get(name)
                    if value is None or value.type != "N":
                        continue
                    if now - TTL_MAX_AGE_SECONDS < float(value.value) < now:
                        expired.append((item.hash_key, item.range_key))
            for hash_key, range_key in expired:
                table.delete_item(hash_key, range_key)
            removed += len(expired)
    return removed


class _Untracked(list[Any]):
    """A model's instance list in moto that keeps nothing."""

    def append(self, _instance: Any) -> None:
        pass


def untrack_per_request_models() -> None:
    """Stop moto keeping every DynamoDB item and SQS message it ever made.

    Moto appends each instance of its models to a class-level list (for its /moto-api/data.json),
    so every item version (each write and each rollback copy makes one) and every message stays in
    memory for the life of the process: the stack grew by gigabytes over a long session. Nothing
    in the stack reads those lists. Moto's reset replaces them, so this runs after the reset.
    """
    from moto.dynamodb.models.dynamo_type import Item
    from moto.sqs.models import Message

    for model in (Item, Message):
        model.instances_tracked = _Untracked()  # type: ignore[union-attr]


def _exact_dynamodb_numbers() -> None:
    """Make moto's ADD and SET arithmetic exact on every number DynamoDB accepts.

    Moto parses a stored number with int() unless it contains a '.', so a sum it stored itself in
    exponent form ('0E-7', after a reservation is given back to exactly zero) breaks the next ADD on
    that item: the user's next request would fail locally, never deployed. Decimal arithmetic with a
    plain-notation result is what DynamoDB does.
    """
    from moto.dynamodb.models.dynamo_type import DDBType, DynamoType

    if getattr(DynamoType.__add__, "_exact", False):
        return

    def arithmetic(sign: int) -> Any:
        def operate(self: Any, other: Any) -> Any:
            if self.type != other.type or not self.is_number():
                return (original_add if sign > 0 else original_sub)(self, other)
            total = Decimal(self.value) + sign * Decimal(other.value)
            return DynamoType({DDBType.NUMBER: format(total.normalize(), "f")})

        operate._exact = True  # type: ignore[attr-defined]
        return operate

    original_add, original_sub = DynamoType.__add__, DynamoType.__sub__
    DynamoType.__add__ = arithmetic(1)  # type: ignore[method-assign]
    DynamoType.__sub__ = arithmetic(-1)  # type: ignore[method-assign]


# Services whose backend moto picks from the signature's scope and X-Amz-Target alone (no path,
# no host): the ones the stack calls.
_ROUTED_BY_SCOPE = frozenset({"dynamodb", "sqs", "secretsmanager", "monitoring", "sts"})


def _route_key(environ: dict[str, Any]) -> tuple[str, str, str] | None:
    """(service, region, X-Amz-Target prefix) of a SigV4-signed request to one of those services;
    None for anything else (moto's own API, unsigned requests), which moto routes as it always does."""
    if str(environ.get("PATH_INFO", "")).startswith(("/moto-api", "/latest/", "/favicon.ico")):
        return None
    try:
        scope = str(environ["HTTP_AUTHORIZATION"]).split(",")[0].split()[1].split("/")
        region, service = scope[2], scope[3].lower()
    except (KeyError, IndexError):
        return None
    if len(scope) != 5 or service not in _ROUTED_BY_SCOPE:
        return None
    return service, region, str(environ.get("HTTP_X_AMZ_TARGET", "")).split(".")[0]


def _routing_once_per_kind(dispatcher: type[Any]) -> type[Any]:
    """Moto's dispatcher, remembering where each kind of request goes.

    Moto routes every request under one lock, and finds the backend by listing its package
    directory (a listdir and a stat per module) and matching URL patterns: with 20 callers every
    DynamoDB read and SQS call queued behind that lock and those syscalls. The backend of a signed
    request to the services above depends only on `_route_key`, so moto routes the first request
    of each kind and the rest find the same app without the lock.
    """

    class RoutingOncePerKind(dispatcher):  # type: ignore[misc, valid-type]
        def __init__(self, create_app: Any) -> None:
            super().__init__(create_app)
            self._routes: dict[tuple[str, str, str], Any] = {}

        def get_application(self, environ: dict[str, Any]) -> Any:
            key = _route_key(environ)
            if key is None:
                return super().get_application(environ)
            app = self._routes.get(key)
            if app is None:  # two first requests may both route: they find the same app
                app = self._routes[key] = super().get_application(environ)
            return app

    return RoutingOncePerKind


class _KeepAliveMoto:
    """Moto's WSGI app served by uvicorn, which keeps HTTP/1.1 connections alive.

    moto's own ThreadedMotoServer (werkzeug's dev server) answers every request with `Connection:
    close`, so each boto3 call paid a new TCP connection (about half of a DynamoDB call's client CPU
    here); deployed DynamoDB keeps connections alive. Requests still run on a pool of threads, as
    werkzeug ran them, so the write lock above keeps its meaning.
    """

    def __init__(self, port: int) -> None:
        import uvicorn
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        config = uvicorn.Config(
            _routing_once_per_kind(DomainDispatcherApplication)(create_backend_app),
            interface="wsgi",  # uvicorn runs it on a pool of threads
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_keep_alive=60,
        )
        with warnings.catch_warnings():
            # uvicorn suggests a2wsgi for WSGI; its own adapter is enough for loopback moto.
            warnings.simplefilter("ignore")
            config.load()
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="moto", daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("moto did not start")
            time.sleep(0.01)

    def get_host_and_port(self) -> tuple[str, int]:
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class _MotoProcess:
    """Moto served from a process of its own (`python -m local.aws`), as DynamoDB and SQS are
    services of their own: its work does not share the caller's interpreter lock. The child
    applies the same patches, starts empty, sweeps expired items itself, and exits when the
    caller closes its stdin (or dies)."""

    def __init__(self, port: int, ttl_sweep_seconds: float | None) -> None:
        command = [sys.executable, "-m", "local.aws", "--port", str(port), "--ttl-sweep", str(ttl_sweep_seconds or 0)]
        self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=TEMPLATE.parent
        )
        self._port = 0

    def start(self) -> None:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError("moto did not start")
        self._port = int(line)

    def get_host_and_port(self) -> tuple[str, int]:
        return "127.0.0.1", self._port

    def stop(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _patch_moto() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    _atomic_dynamodb_writes()
    _transactions_copy_their_items()
    _exact_dynamodb_numbers()
    _clause_counts_in_one_pass()


def serve(port: int, ttl_sweep_seconds: float | None) -> None:
    """The child of `_MotoProcess`: patched moto on `port` (0: any), its port printed on stdout
    once it answers, until stdin closes."""
    _patch_moto()
    server = _KeepAliveMoto(port)
    server.start()
    untrack_per_request_models()
    local = LocalAws(server=server, endpoint="")
    if ttl_sweep_seconds:
        local.start_ttl_sweeper(ttl_sweep_seconds)
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()
    local.stop()


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return dict(load_yaml(path.read_text()))


def start(
    *,
    port: int = 0,
    api_key: str = "sk-local-simulator",
    parameters: dict[str, str] | None = None,
    template: Path = TEMPLATE,
    stack: str = "claude-kit-local",
    ttl_sweep_seconds: float | None = TTL_SWEEP_SECONDS,
    own_process: bool = False,
) -> LocalAws:
    """Start moto, create the template's resources, and return the resolved environment.

    `parameters` override template parameter defaults, as `sam deploy --parameter-overrides`.
    Expired items are swept every `ttl_sweep_seconds` (None: never; `sweep_expired` on demand,
    in this process's moto only). `own_process`: moto runs in a child process (`_MotoProcess`).
    """
    os.environ.update({k: os.environ.get(k, v) for k, v in FAKE_CREDENTIALS.items()})
    server: _KeepAliveMoto | _MotoProcess
    if own_process:
        server = _MotoProcess(port, ttl_sweep_seconds)
        server.start()
    else:
        _patch_moto()
        server = _KeepAliveMoto(port)
        server.start()
    host, bound_port = server.get_host_and_port()
    local = LocalAws(server=server, endpoint=f"http://{host}:{bound_port}")
    if not own_process:
        # Moto keeps its state per process: start every stack from empty, as a new deploy would.
        reset = urllib.request.Request(f"{local.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        urllib.request.urlopen(reset, timeout=10)  # noqa: S310
        untrack_per_request_models()
    doc = load_template(template)
    params = {name: str(spec.get("Default", "")) for name, spec in doc.get("Parameters", {}).items()}
    params.update(parameters or {})
    resources: dict[str, Any] = doc.get("Resources", {})
    local.parameters = params
    resolver = _Resolver(params, local, stack)

    # Queues referenced by a redrive policy must exist first, so create dead-letter queues early.
    order = sorted(resources, key=lambda name: "RedrivePolicy" in resources[name].get("Properties", {}))
    for name in order:
        kind, props = resources[name]["Type"], resources[name].get("Properties", {})
        if kind == "AWS::DynamoDB::Table":
            _create_table(local, name, props, stack)
        elif kind == "AWS::SQS::Queue":
            _create_queue(local, name, props, stack, resolver)
        elif kind == "AWS::SecretsManager::Secret":
            _create_secret(local, name, stack, api_key)

    variables = doc.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    for key, value in variables.items():
        resolved = resolver.resolve(value)
        if resolved is not None:
            local.environment[key] = resolved
    if ttl_sweep_seconds and not own_process:
        local.start_ttl_sweeper(ttl_sweep_seconds)
    return local


def _create_table(local: LocalAws, name: str, props: dict[str, Any], stack: str) -> None:
    table = f"{stack}-{name}"
    client = local.client("dynamodb")
    client.create_table(
        TableName=table,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode="PAY_PER_REQUEST",
    )
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(TableName=table, TimeToLiveSpecification=ttl)
    local.physical[name] = table
    local.arns[name] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"


def _create_queue(local: LocalAws, name: str, props: dict[str, Any], stack: str, resolver: _Resolver) -> None:
    attributes: dict[str, str] = {}
    for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds"):
        if key in props:
            attributes[key] = str(resolver.resolve(props[key]))
    redrive = props.get("RedrivePolicy")
    if redrive:
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": resolver.resolve(redrive["deadLetterTargetArn"]),
                "maxReceiveCount": int(str(resolver.resolve(redrive["maxReceiveCount"]))),
            }
        )
    client = local.client("sqs")
    url = client.create_queue(QueueName=f"{stack}-{name}", Attributes=attributes)["QueueUrl"]
    local.physical[name] = url
    local.arns[name] = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _create_secret(local: LocalAws, name: str, stack: str, api_key: str) -> None:
    secret = local.client("secretsmanager").create_secret(
        Name=f"{stack}-{name}", SecretString=json.dumps({"api_key": api_key})
    )
    local.physical[name] = secret["ARN"]
    local.arns[name] = secret["ARN"]


class _Resolver:
    """Just enough of CloudFormation's intrinsic functions for environment values."""

    def __init__(self, params: dict[str, str], local: LocalAws, stack: str) -> None:
        self.params = params
        self.local = local
        self.pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": stack}

    def resolve(self, value: Any) -> str | None:
        if isinstance(value, str | int | float | bool):
            return str(value)
        if not isinstance(value, dict) or len(value) != 1:
            return None
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return self._ref(str(arg))
        if fn == "Fn::GetAtt":
            logical = arg[0] if isinstance(arg, list) else str(arg).split(".")[0]
            return self.local.arns.get(logical)
        if fn == "Fn::Sub" and isinstance(arg, str):
            return re.sub(r"\$\{([^}]+)\}", lambda m: self._ref(m.group(1)) or "", arg)
        return None

    def _ref(self, name: str) -> str | None:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        return self.local.physical.get(name)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="patched moto on loopback, until stdin closes")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ttl-sweep", type=float, default=TTL_SWEEP_SECONDS)
    args = parser.parse_args()
    serve(args.port, args.ttl_sweep or None)
