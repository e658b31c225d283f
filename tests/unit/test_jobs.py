"""Pure parts of the jobs feature: body validation, message chunking, the Lambda event shape and
how a partial batch response is read."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from claudekit.store.jobs import public_view
from claudekit.tasks.jobs.models import MAX_SQS_PAYLOAD_BYTES, JobMessage, JobsBody
from claudekit.tasks.jobs.queue import chunks
from local.sqs_source import build_event, failed_ids


def message(size: int = 10) -> JobMessage:
    return JobMessage(job_id="0b9d7c1e-5f3a-4c2b-8e6d-9a1f2b3c4d5e", user="u", task="summarize", input="x" * size)


def test_body_accepts_text_tasks_and_rejects_the_rest() -> None:
    body = JobsBody.model_validate({"items": [{"task": "reason", "input": "why?"}]})
    assert body.items[0].task == "reason"
    for bad in ({"task": "classify", "input": "x"}, {"task": "generate", "input": " "}, {"task": "generate"}):
        with pytest.raises(ValidationError):
            JobsBody.model_validate({"items": [bad]})
    with pytest.raises(ValidationError):
        JobsBody.model_validate({"items": [], "extra": 1})


def test_chunks_respect_ten_entries_and_the_payload_limit() -> None:
    small = [message() for _ in range(25)]
    assert [len(c) for c in chunks(small)] == [10, 10, 5]
    big = [message(100_000) for _ in range(5)]
    split = list(chunks(big))
    assert all(sum(len(m.to_json().encode()) for m in c) <= MAX_SQS_PAYLOAD_BYTES for c in split)
    assert sum(len(c) for c in split) == 5


def test_public_view_shows_result_or_error_never_internals() -> None:
    record: dict[str, Any] = {
        "job_id": "j",
        "task": "summarize",
        "status": "failed",
        "owner": "u",
        "input_sha256": "h",
        "error": {"code": "UPSTREAM_ERROR", "message": "no"},
        "failed_message_id": "m",
    }
    view = public_view(record)
    assert view["error"] == {"code": "UPSTREAM_ERROR", "message": "no"}
    assert not {"owner", "input_sha256", "failed_message_id", "result"} & view.keys()


def test_event_has_the_lambda_record_shape() -> None:
    received = {
        "MessageId": "m1",
        "ReceiptHandle": "r1",
        "Body": "{}",
        "MD5OfBody": hashlib.md5(b"{}").hexdigest(),
        "Attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1"},
        "MessageAttributes": {"kind": {"StringValue": "job", "DataType": "String"}},
    }
    (record,) = build_event([received], "arn:aws:sqs:eu-west-1:123456789012:q")["Records"]
    assert record["eventSource"] == "aws:sqs" and record["awsRegion"] == "eu-west-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "2"
    assert record["messageAttributes"]["kind"]["stringValue"] == "job"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    assert {"messageId", "receiptHandle", "body", "md5OfBody", "eventSourceARN"} <= record.keys()


@pytest.mark.parametrize(
    ("response", "kept"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, {"a", "b", "c"}),  # unknown id: whole batch
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"a", "b", "c"}),
    ],
)
def test_partial_batch_response_is_read_as_lambda_reads_it(response: Any, kept: set[str]) -> None:
    assert failed_ids(response, {"a", "b", "c"}) == kept
