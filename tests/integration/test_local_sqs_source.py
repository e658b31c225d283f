"""The local SQS event source follows the function's SQS event in the template: records arrive in
batches of BatchSize, at most ScalingConfig.MaximumConcurrency invocations run at once (counted by
the function pool), and batchItemFailures count only with ReportBatchItemFailures. Real HTTP to moto."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local import aws
from local.instances import FunctionPool
from local.sqs_source import SqsEventSource, sqs_events
from local.stack import Stack

# Each invocation records its batch size, then waits (up to 10 s) until BARRIER invocations have
# started: only as many pollers as MaximumConcurrency can get past it together.
APP = """
import os
import pathlib
import time
import uuid


def handler(event, context):
    out = pathlib.Path(os.environ["SQS_TEST_DIR"])
    (out / f"batch-{uuid.uuid4()}").write_text(str(len(event["Records"])))
    deadline = time.monotonic() + 10
    while len(list(out.glob("batch-*"))) < int(os.environ["SQS_TEST_BARRIER"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"batchItemFailures": []}
"""


def _doc(code_uri: str, event: dict[str, Any]) -> dict[str, Any]:
    """A template with one function whose only SQS event has `event`'s properties."""
    return {
        "Parameters": {"Concurrency": {"Type": "Number", "Default": 2}},
        "Resources": {
            "AnyName": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": code_uri,
                    "Handler": "app.handler",
                    "Timeout": 30,
                    "Events": {
                        "Poll": {
                            "Type": "SQS",
                            "Properties": {"Queue": {"Fn::GetAtt": ["TestQueue", "Arn"]}, **event},
                        }
                    },
                },
            }
        },
    }


@pytest.fixture
def queue(local_aws: aws.LocalAws) -> Iterator[tuple[str, str]]:
    sqs = local_aws.client("sqs")
    url = sqs.create_queue(QueueName=f"sqs-source-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    yield url, arn
    sqs.delete_queue(QueueUrl=url)


def _send(local_aws: aws.LocalAws, url: str, count: int) -> None:
    sqs = local_aws.client("sqs")
    for start in range(0, count, 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps({"n": i})} for i in range(start, min(count, start + 10))]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


def _drained(local_aws: aws.LocalAws, url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    counts = local_aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return not any(int(v) for v in counts.values())


def test_the_worker_event_is_found_by_its_type_with_the_template_values(local_aws: aws.LocalAws) -> None:
    template = aws.load_template()
    (event,) = sqs_events(template, local_aws.parameters)
    declared = next(
        e["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
        for e in r["Properties"].get("Events", {}).values()
        if e["Type"] == "SQS"
    )
    assert event.batch_size == declared["BatchSize"]
    concurrency = declared["ScalingConfig"]["MaximumConcurrency"]
    assert event.max_concurrency == int(template["Parameters"][concurrency["Ref"]]["Default"])
    assert event.report_batch_item_failures == ("ReportBatchItemFailures" in declared["FunctionResponseTypes"])
    # A parameter override moves it, as `sam deploy --parameter-overrides` would.
    (moved,) = sqs_events(template, {**local_aws.parameters, concurrency["Ref"]: "7"})
    assert moved.max_concurrency == 7


def test_records_arrive_in_batches_of_batch_size_at_most_maximum_concurrency_at_once(
    local_aws: aws.LocalAws, queue: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, arn = queue
    code, out = tmp_path / "fn", tmp_path / "out"
    code.mkdir()
    out.mkdir()
    (code / "app.py").write_text(APP)
    monkeypatch.setenv("SQS_TEST_DIR", str(out))  # spawned instances inherit the environment
    monkeypatch.setenv("SQS_TEST_BARRIER", "3")
    doc = _doc(str(code), {"BatchSize": 3, "ScalingConfig": {"MaximumConcurrency": {"Ref": "Concurrency"}}})
    stack = Stack(host="127.0.0.1", port=0)
    stack.local_aws = aws.LocalAws(
        server=None,
        endpoint=local_aws.endpoint,
        physical={"TestQueue": url},
        arns={"TestQueue": arn},
        parameters={"Concurrency": "3"},
    )
    _send(local_aws, url, 12)
    stack._start_sqs_sources(doc, 30)
    try:
        stack._start_pools()
        deadline = time.monotonic() + 60
        while not _drained(local_aws, url):
            assert time.monotonic() < deadline, "the queue was not drained"
            time.sleep(0.1)
    finally:
        for source in stack.sqs_sources:
            source.stop()
        for pool in stack.pools:
            pool.stop()

    sizes = sorted(int(p.read_text()) for p in out.glob("batch-*"))
    assert sum(sizes) == 12  # every record once
    assert max(sizes) == 3 and all(size <= 3 for size in sizes)
    (pool,) = stack.pools
    assert isinstance(pool, FunctionPool)
    assert pool.peak_invocations == 3  # the barrier needs 3 at once; the source never starts a fourth
    assert pool.instances <= 3


@pytest.mark.parametrize("report", [True, False])
def test_batch_item_failures_count_only_with_report_batch_item_failures(
    local_aws: aws.LocalAws, queue: tuple[str, str], report: bool
) -> None:
    url, arn = queue
    types = {"FunctionResponseTypes": ["ReportBatchItemFailures"]} if report else {}
    (event,) = sqs_events(_doc("unused", {"BatchSize": 10, **types}), {})
    assert event.report_batch_item_failures is report
    handled = threading.Event()

    def handler(sqs_event: dict[str, Any], _context: Any) -> dict[str, Any]:
        handled.set()
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in sqs_event["Records"]]}

    _send(local_aws, url, 1)
    source = SqsEventSource(
        handler,
        url,
        arn,
        endpoint_url=local_aws.endpoint,
        batch_size=event.batch_size,
        max_concurrency=1,
        report_batch_item_failures=event.report_batch_item_failures,
    )
    with source:
        assert handled.wait(30)
    # stop() returns after the batch was settled: kept in flight if reported failed, else deleted.
    assert _drained(local_aws, url) is not report
