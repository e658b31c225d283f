"""The kit's one handle on its DynamoDB table: a low-level client and boto3's type serializer.

Every store module uses this one style. The low-level client is thread-safe, so one per process
serves every store and thread (batch records and stream pumps run in threads) with no per-thread
copies; it is built on first use, not at import, so nothing here costs the cold start. Values go through boto3's
serializer both ways, so the stores work in plain Python values (numbers as `Decimal`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_ddb(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values (an item, a key, expression values) in DynamoDB's wire format."""
    return {name: _serializer.serialize(value) for name, value in values.items()}


def from_ddb(item: Mapping[str, Any]) -> dict[str, Any]:
    """A wire-format item as Python values."""
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# botocore checks every parameter against the service model before sending (about a millisecond of
# CPU on a settlement's transaction). Ours are built by the stores, never taken from callers, and
# DynamoDB validates them again on arrival, so the client-side pass is skipped.
TRANSACTION_ITEMS = 100  # the most one TransactWriteItems may hold
_CONFIG = Config(parameter_validation=False)
_clients: dict[tuple[str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def client() -> Any:
    """The process's DynamoDB client: one per endpoint and region in the environment, so a test or
    the local stack that points boto3 elsewhere gets a client for that, never a stale one."""
    where = (
        os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or os.environ.get("AWS_ENDPOINT_URL"),
        os.environ.get("AWS_REGION"),
    )
    with _clients_lock:
        if where not in _clients:
            _clients[where] = boto3.client("dynamodb", config=_CONFIG)  # type: ignore[call-overload]
        return _clients[where]


def reset() -> None:
    """Forget the clients: the next `client()` builds a new one (a SnapStart restore; tests)."""
    with _clients_lock:
        _clients.clear()


def failed_conditions(exc: ClientError) -> list[int]:
    """The positions of a cancelled transaction's items whose condition did not hold (none for a
    conflict, a throttle or any other error)."""
    if error_code(exc) != "TransactionCanceledException":
        return []
    reasons = exc.response.get("CancellationReasons") or []
    return [i for i, reason in enumerate(reasons) if reason.get("Code") == "ConditionalCheckFailed"]


def _conditional(
    request: dict[str, Any],
    condition: str | None,
    names: Mapping[str, str] | None,
    values: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """`request` with the condition and the expression's names and values it is given."""
    if condition:
        request["ConditionExpression"] = condition
    if names:
        request["ExpressionAttributeNames"] = dict(names)
    if values:
        request["ExpressionAttributeValues"] = to_ddb(values)
    return request


def key(item_id: str) -> dict[str, Any]:
    return {"id": {"S": item_id}}


class Table:
    """The state table (`id` is its only key) through one shared low-level client."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def client(self) -> Any:
        return client()

    def get(self, item_id: str, *, consistent: bool = False) -> dict[str, Any] | None:
        found = self.client.get_item(TableName=self.name, Key=key(item_id), ConsistentRead=consistent).get("Item")
        return from_ddb(found) if found else None

    def get_many(self, item_ids: list[str]) -> dict[str, dict[str, Any]] | None:
        """Items by id in one BatchGetItem (absent ids are absent); None if DynamoDB left any
        unprocessed, so the caller can treat the read as failed rather than as "no item"."""
        response = self.client.batch_get_item(RequestItems={self.name: {"Keys": [key(i) for i in item_ids]}})
        if response.get("UnprocessedKeys"):
            return None
        found = (from_ddb(item) for item in response.get("Responses", {}).get(self.name, []))
        return {str(item["id"]): item for item in found}

    def put_request(
        self, item: Mapping[str, Any], *, condition: str | None = None, values: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The parameters of one PutItem, as `put` sends them or a transaction's `Put`."""
        return _conditional({"TableName": self.name, "Item": to_ddb(item)}, condition, None, values)

    def put(
        self, item: Mapping[str, Any], *, condition: str | None = None, values: Mapping[str, Any] | None = None
    ) -> None:
        self.client.put_item(**self.put_request(item, condition=condition, values=values))

    def delete(self, item_id: str) -> None:
        self.client.delete_item(TableName=self.name, Key=key(item_id))

    def update_request(
        self,
        item_id: str,
        expression: str,
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The parameters of one UpdateItem, as `update` sends them or a transaction's `Update`."""
        request = {"TableName": self.name, "Key": key(item_id), "UpdateExpression": expression}
        return _conditional(request, condition, names, values)

    def update(
        self,
        item_id: str,
        expression: str,
        *,
        condition: str | None = None,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
        returns: str = "NONE",
        returns_on_failure: str = "NONE",
    ) -> dict[str, Any]:
        """One UpdateItem; the attributes `returns` asks for. A failed condition raises
        ClientError, carrying the item in `response["Item"]` if `returns_on_failure` asks."""
        request = self.update_request(item_id, expression, condition=condition, names=names, values=values)
        if returns_on_failure != "NONE":
            request["ReturnValuesOnConditionCheckFailure"] = returns_on_failure
        response = self.client.update_item(ReturnValues=returns, **request)
        return from_ddb(response.get("Attributes") or {})

    def transact(self, updates: list[dict[str, Any]], *, token: str | None = None) -> None:
        """Several `update_request`s applied together or not at all (one round trip). `token`: the
        ClientRequestToken, so a retry of a transaction that was written is not applied twice."""
        extra = {"ClientRequestToken": token} if token else {}
        self.client.transact_write_items(TransactItems=[{"Update": update} for update in updates], **extra)
