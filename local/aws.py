"""Local AWS: moto on loopback, provisioned from what template.yaml declares.

The template is the single list of resources: every DynamoDB table, SQS queue and
Secrets Manager secret it declares is created in moto, and the functions' environment
(Globals.Function.Environment) is resolved against those local resources.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
from cfn_tools import load_yaml  # type: ignore[import-untyped]

REGION = "us-east-1"
ACCOUNT = "123456789012"
TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"

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
    environment: dict[str, str] = field(default_factory=dict)  # the functions' variables, resolved

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)  # type: ignore[call-overload]

    def stop(self) -> None:
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
            DomainDispatcherApplication(create_backend_app),
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


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return dict(load_yaml(path.read_text()))


def start(
    *,
    port: int = 0,
    api_key: str = "sk-local-simulator",
    parameters: dict[str, str] | None = None,
    template: Path = TEMPLATE,
    stack: str = "claude-kit-local",
) -> LocalAws:
    """Start moto, create the template's resources, and return the resolved environment.

    `parameters` override template parameter defaults, as `sam deploy --parameter-overrides`.
    """
    os.environ.update({k: os.environ.get(k, v) for k, v in FAKE_CREDENTIALS.items()})
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    _atomic_dynamodb_writes()
    _exact_dynamodb_numbers()
    server = _KeepAliveMoto(port)
    server.start()
    host, bound_port = server.get_host_and_port()
    local = LocalAws(server=server, endpoint=f"http://{host}:{bound_port}")
    # Moto keeps its state per process: start every stack from empty, as a new deploy would.
    reset = urllib.request.Request(f"{local.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback http
    urllib.request.urlopen(reset, timeout=10)  # noqa: S310
    doc = load_template(template)
    params = {name: str(spec.get("Default", "")) for name, spec in doc.get("Parameters", {}).items()}
    params.update(parameters or {})
    resources: dict[str, Any] = doc.get("Resources", {})
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
