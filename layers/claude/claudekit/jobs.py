"""Batch jobs: the job record, the queue message, status transitions, and running one job.

A job is born in POST /jobs (`submit`): its record is written to the state table (status
`queued`, owner, task, a digest of the input, never the input itself) and its input travels
in the SQS message. The batch function (`JobConsumer`) runs each message at most once against
Claude, however often SQS delivers it:

- the job record says `succeeded`: the message is a duplicate, delete it;
- otherwise the Claude call runs inside Powertools idempotency keyed by the job id, so a
  redelivery after a crash or a lost write replays the stored result instead of calling (and
  charging) again;
- transient failures go back to the queue with a visibility timeout that honours retry-after;
  permanent ones, malformed messages and the last allowed receive mark the job `failed` with the
  reason and let SQS move the message to the dead-letter queue.

Status moves queued -> running -> succeeded | failed (running -> queued between retries), each
move a conditional write, so a late or duplicate worker can never overwrite a finished job.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from claudekit.client import ClaudeClient, ClaudeRequest, ClaudeResult, get_client
from claudekit.contract import Body, GenerateTask
from claudekit.deadline import Deadline, LambdaContextLike
from claudekit.errors import ClaudeError, InputTooLarge, InternalError, NotFound, RateLimited
from claudekit.settings import Settings, get_settings
from claudekit.telemetry import hash_user, logger

JobStatus = Literal["queued", "running", "succeeded", "failed"]

MAX_ITEMS = 100
# SQS limits one message and one SendMessageBatch call to 256 KiB (1 MiB since 2025, not everywhere).
MAX_SQS_PAYLOAD_BYTES = 256 * 1024
SEND_BATCH_ENTRIES = 10
SEND_ATTEMPTS = 3
FEATURE = "jobs"


# ---- what callers send and what they read back ------------------------------------------


class JobItem(Body):
    """One item of POST /jobs: a text task and its input."""

    task: GenerateTask
    input: str = Field(min_length=1)

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class JobsBody(Body):
    items: list[JobItem] = Field(min_length=1, max_length=MAX_ITEMS)


class JobMessage(BaseModel):
    """The SQS message body: everything the consumer needs, including the input itself."""

    model_config = ConfigDict(extra="forbid", strict=True)

    job_id: str = Field(min_length=1, max_length=64)
    user: str = Field(min_length=1)
    task: GenerateTask
    input: str = Field(min_length=1)
    # Times this message was re-sent because the job could not start (rate limit, deadline).
    deferrals: int = Field(0, ge=0)

    def to_json(self) -> str:
        return self.model_dump_json()


@dataclass(frozen=True)
class JobOptions:
    """Knobs of the consumer; defaults suit the deployed function (300 s timeout)."""

    # Visibility timeout after a transient failure that came without retry-after: base * 2**(n-1).
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 900.0
    # In-progress duplicates are looked at again after this long.
    in_progress_retry_seconds: float = 30.0
    # A record does not start with less invocation time left than this; it goes back untouched.
    min_start_seconds: float = 20.0
    # Re-sends of a message that could not start (rate limit window full, last receive unstarted).
    max_deferrals: int = 60
    # Job records (and their results) and idempotency records live this long.
    ttl_seconds: int = 7 * 86_400
    # Records of one batch processed concurrently (BATCH_MAX_CONCURRENCY).
    concurrency: int = 4


def now_iso(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat(timespec="milliseconds")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def job_key(job_id: str) -> dict[str, str]:
    return {"id": f"job#{job_id}"}


def error_of(exc: ClaudeError) -> dict[str, str]:
    return {"code": exc.code, "message": exc.message}


def result_of(result: ClaudeResult) -> dict[str, Any]:
    """A text task's result, as GET /jobs/{id} shows it."""
    return {
        "text": result.text,
        "model": result.model,
        "stop_reason": result.stop_reason,
        "truncated": result.truncated,
        "usage": result.usage.public(),
        "cost_usd": float(result.cost_usd),
    }


# Attribute names that are reserved words in DynamoDB expressions.
_NAMES = {"#s": "status", "#r": "result", "#e": "error"}


# ---- the job records ----------------------------------------------------------------------


class JobStore:
    """Job records in the state table, keyed `job#<uuid>`. Every status change is conditional."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._local = threading.local()

    @property
    def table(self) -> Any:
        """boto3 resources are not thread-safe: one per thread."""
        table = getattr(self._local, "table", None)
        if table is None:
            table = self._local.table = boto3.resource("dynamodb").Table(self.table_name)
        return table

    def create(self, records: list[dict[str, Any]]) -> None:
        """All records or none: one transaction (DynamoDB allows 100 items, our maximum)."""
        self.table.meta.client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self.table_name, "Item": r, "ConditionExpression": "attribute_not_exists(id)"}}
                for r in records
            ]
        )

    def get(self, job_id: str) -> dict[str, Any] | None:
        item = self.table.get_item(Key=job_key(job_id), ConsistentRead=True).get("Item")
        return dict(item) if item else None

    def _update(self, job_id: str, expression: str, condition: str, values: dict[str, Any]) -> bool:
        """One conditional update; False when the condition does not hold (someone got there first)."""
        try:
            self.table.update_item(
                Key=job_key(job_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={k: v for k, v in _NAMES.items() if k in f"{expression} {condition}"},
                ExpressionAttributeValues={":now": now_iso(), **values},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def to_running(self, job_id: str, message_id: str) -> bool:
        """queued | running (a crashed attempt) | failed (a redrive) -> running; never from succeeded."""
        return self._update(
            job_id,
            "SET #s = :running, updated_at = :now, started_at = :now, message_id = :mid "
            "ADD attempts :one REMOVE failed_message_id",
            "attribute_exists(id) AND #s <> :ok",
            {":running": "running", ":ok": "succeeded", ":mid": message_id, ":one": 1},
        )

    def to_succeeded(self, job_id: str, result: dict[str, Any]) -> bool:
        """-> succeeded. A real result wins over any earlier state except another success."""
        return self._update(
            job_id,
            "SET #s = :ok, updated_at = :now, finished_at = :now, #r = :result REMOVE #e, failed_message_id",
            "attribute_exists(id) AND #s <> :ok",
            {":ok": "succeeded", ":result": json.dumps(result, separators=(",", ":"))},
        )

    def to_failed(
        self, job_id: str, error: dict[str, str], *, message_id: str | None, only_from: str | None = None
    ) -> bool:
        """-> failed with the reason. `message_id` names the delivery now on its way to the DLQ."""
        condition = "attribute_exists(id) AND #s <> :ok"
        values: dict[str, Any] = {":failed": "failed", ":ok": "succeeded", ":error": error}
        if only_from is not None:
            condition += " AND #s = :from"
            values[":from"] = only_from
        expression = "SET #s = :failed, updated_at = :now, finished_at = :now, #e = :error"
        if message_id is not None:
            expression += ", failed_message_id = :mid"
            values[":mid"] = message_id
        return self._update(job_id, expression, condition, values)

    def to_queued(self, job_id: str, error: dict[str, str]) -> bool:
        """running -> queued after a transient failure; the last error stays visible meanwhile."""
        return self._update(
            job_id,
            "SET #s = :queued, updated_at = :now, last_error = :error",
            "#s = :running",
            {":queued": "queued", ":running": "running", ":error": error},
        )


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """GET /jobs/{id}: id, task, status, and the result or the error."""
    view: dict[str, Any] = {"id": record["job_id"], "task": record["task"], "status": record["status"]}
    if record["status"] == "succeeded" and "result" in record:
        view["result"] = json.loads(str(record["result"]))
    elif record["status"] == "failed" and "error" in record:
        error = record["error"]
        view["error"] = {"code": str(error.get("code", "INTERNAL_ERROR")), "message": str(error.get("message", ""))}
    view["created_at"] = record.get("created_at")
    view["updated_at"] = record.get("updated_at")
    return view
