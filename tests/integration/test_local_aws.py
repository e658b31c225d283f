"""Moto as the local stack patches it: transactions roll back only their own items, and items expire
by the table's TTL attribute, as DynamoDB's do. Over real HTTP to moto on loopback."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local import aws


@pytest.fixture
def table(local_aws: aws.LocalAws) -> str:
    return local_aws.physical["StateTable"]


@pytest.fixture
def ddb(local_aws: aws.LocalAws) -> Any:
    return local_aws.client("dynamodb")


@pytest.fixture
def key() -> Callable[[str], dict[str, Any]]:
    run = uuid.uuid4().hex

    def make(name: str) -> dict[str, Any]:
        return {"id": {"S": f"test-local-aws#{run}#{name}"}}

    return make


def _get(ddb: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    item: dict[str, Any] | None = ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
    return item


def test_failed_transaction_puts_back_every_item_it_wrote(ddb: Any, table: str, key: Any) -> None:
    ddb.put_item(TableName=table, Item={**key("counter"), "n": {"N": "1"}})
    ddb.put_item(TableName=table, Item={**key("doomed"), "v": {"S": "kept"}})
    ddb.put_item(TableName=table, Item={**key("guard"), "open": {"BOOL": False}})
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {**key("new"), "v": {"S": "x"}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": key("counter"),
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {"Delete": {"TableName": table, "Key": key("doomed")}},
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": key("guard"),
                        "ConditionExpression": "#o = :yes",
                        "ExpressionAttributeNames": {"#o": "open"},
                        "ExpressionAttributeValues": {":yes": {"BOOL": True}},
                    }
                },
            ]
        )
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _get(ddb, table, key("new")) is None
    assert _get(ddb, table, key("counter")) == {**key("counter"), "n": {"N": "1"}}
    assert _get(ddb, table, key("doomed")) == {**key("doomed"), "v": {"S": "kept"}}


def test_failed_transaction_leaves_other_items_as_they_are(ddb: Any, table: str, key: Any) -> None:
    ddb.put_item(TableName=table, Item={**key("bystander"), "n": {"N": "7"}})
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {**key("a"), "v": {"S": "x"}}}},
                {
                    "Put": {
                        "TableName": table,
                        "Item": {**key("b"), "v": {"S": "y"}},
                        "ConditionExpression": "attribute_exists(id)",
                    }
                },
            ]
        )
    ddb.put_item(TableName=table, Item={**key("after"), "n": {"N": "1"}})
    assert _get(ddb, table, key("bystander")) == {**key("bystander"), "n": {"N": "7"}}
    assert _get(ddb, table, key("after")) == {**key("after"), "n": {"N": "1"}}
    assert _get(ddb, table, key("a")) is None


def test_successful_transaction_applies_every_item(ddb: Any, table: str, key: Any) -> None:
    ddb.put_item(TableName=table, Item={**key("counter"), "n": {"N": "1"}})
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {**key("new"), "v": {"S": "x"}}}},
            {
                "Update": {
                    "TableName": table,
                    "Key": key("counter"),
                    "UpdateExpression": "ADD n :one",
                    "ConditionExpression": "n = :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
        ]
    )
    assert _get(ddb, table, key("new")) == {**key("new"), "v": {"S": "x"}}
    assert _get(ddb, table, key("counter")) == {**key("counter"), "n": {"N": "2"}}


def test_sweep_deletes_exactly_the_expired_items(ddb: Any, table: str, key: Any) -> None:
    now = int(time.time())
    items = {
        "expired": {"expiration": {"N": str(now - 10)}},
        "live": {"expiration": {"N": str(now + 3600)}},
        "no-ttl": {},
        "not-a-number": {"expiration": {"S": str(now - 10)}},
        "too-old": {"expiration": {"N": str(now - 6 * 365 * 24 * 3600)}},  # DynamoDB ignores it
    }
    for name, attributes in items.items():
        ddb.put_item(TableName=table, Item={**key(name), **attributes})

    assert aws.sweep_expired(now=now) >= 1
    assert _get(ddb, table, key("expired")) is None
    for name in ("live", "no-ttl", "not-a-number", "too-old"):
        assert _get(ddb, table, key(name)) is not None, name
    assert aws.sweep_expired(now=now + 3601) >= 1
    assert _get(ddb, table, key("live")) is None


def test_the_stack_sweeps_expired_items_on_its_own(ddb: Any, table: str, key: Any) -> None:
    ddb.put_item(TableName=table, Item={**key("expired"), "expiration": {"N": str(int(time.time()) - 1)}})
    deadline = time.monotonic() + 3 * aws.TTL_SWEEP_SECONDS
    while _get(ddb, table, key("expired")) is not None:
        assert time.monotonic() < deadline, "no sweep deleted the expired item"
        time.sleep(0.2)


def test_moto_keeps_no_copy_of_item_versions_or_messages(
    local_aws: aws.LocalAws, ddb: Any, table: str, key: Any
) -> None:
    from moto.dynamodb.models.dynamo_type import Item
    from moto.sqs.models import Message

    for _ in range(20):
        ddb.update_item(
            TableName=table,
            Key=key("counter"),
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
    sqs = local_aws.client("sqs")
    url = sqs.create_queue(QueueName=f"untracked-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    sqs.delete_queue(QueueUrl=url)
    assert _get(ddb, table, key("counter")) == {**key("counter"), "n": {"N": "20"}}
    assert len(Item.instances_tracked) == 0  # type: ignore[attr-defined]
    assert len(Message.instances_tracked) == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "expression",
    [
        "ADD a :v, b :v, c :v SET d = :v, e = if_not_exists(e, :v) REMOVE f, g",
        "ADD a :v ADD b :v",
        "SET a = :v SET b = :v ADD c :v ADD d :v",
        "ADD c :v REMOVE x REMOVE y SET a = :v SET b = :v",
        "SET a = list_append(a, :v), b = :v + :v REMOVE c ADD d :v REMOVE e",
        "REMOVE a, b[1], c.d",
    ],
)
def test_clause_counts_refuse_what_moto_refuses_with_its_message(local_aws: aws.LocalAws, expression: str) -> None:
    """The one-pass clause count (local.aws) against moto's own traversal, on the same trees."""
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser  # type: ignore[attr-defined]
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser
    from moto.dynamodb.parsing.validators import ActionCountValidator

    def outcome(traverse: Callable[[Any, Any], Any]) -> str | None:
        try:
            traverse(ActionCountValidator(), UpdateExpressionParser.make(expression))
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    assert getattr(ActionCountValidator.traverse, "_one_pass", False)  # the stack patched it
    assert outcome(ActionCountValidator.traverse) == outcome(DepthFirstTraverser.traverse)


def test_moto_in_a_process_of_its_own_is_provisioned_patched_and_sweeps(key: Any) -> None:
    """`start(own_process=True)` (the jobs benchmark's moto): the template's resources, exact
    numbers, TTL expiry by the child's own sweeper, and the child gone after stop()."""
    local = aws.start(own_process=True, ttl_sweep_seconds=0.2)
    try:
        ddb, table = local.client("dynamodb"), local.physical["StateTable"]
        assert local.client("sqs").get_queue_url(QueueName=local.physical["JobsQueue"].rsplit("/", 1)[-1])
        for delta in ("0.1", "-0.1", "1"):  # exact decimal arithmetic: the child's moto is patched
            values = {":d": {"N": delta}}
            ddb.update_item(
                TableName=table, Key=key("n"), UpdateExpression="ADD v :d", ExpressionAttributeValues=values
            )
        assert _get(ddb, table, key("n")) == {**key("n"), "v": {"N": "1"}}
        gone = {**key("gone"), "expiration": {"N": str(int(time.time()) - 5)}}
        ddb.put_item(TableName=table, Item=gone)
        deadline = time.monotonic() + 10
        while _get(ddb, table, key("gone")) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(ddb, table, key("gone")) is None
        process = local.server._process
    finally:
        local.stop()
    assert process.poll() is not None
