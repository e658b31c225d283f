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

`"mode": "batch"` sends the whole list through the Message Batches API instead (half price,
results within 24 h): `submit` reserves the owner's budget at the batch rate, records the jobs,
creates one message batch (`custom_id` = job id) and enqueues one delayed poll message; the
consumer answers a poll message by polling the batch (re-sending itself until it has ended) and
writing each result back to its job. Only the poll that wins a job's conditional transition
settles that job's reservation, so a duplicate poll never charges twice.
"""

from __future__ import annotations

import contextlib
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
from decimal import Decimal
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
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from claudekit.client import ClaudeClient, ClaudeRequest, ClaudeResult, get_client
from claudekit.contract import Body, GenerateTask
from claudekit.deadline import Deadline, LambdaContextLike
from claudekit.errors import (
    ClaudeError,
    InputTooLarge,
    InternalError,
    NotFound,
    RateLimited,
    UpstreamAuth,
    UpstreamError,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from claudekit.limits import Reservation
from claudekit.settings import Settings, get_settings
from claudekit.telemetry import hash_user, logger

JobStatus = Literal["queued", "running", "succeeded", "failed"]
JobMode = Literal["realtime", "batch"]

MAX_ITEMS = 100
# SQS limits one message and one SendMessageBatch call to 256 KiB (1 MiB since 2025, not everywhere).
MAX_SQS_PAYLOAD_BYTES = 256 * 1024
SEND_BATCH_ENTRIES = 10
SEND_ATTEMPTS = 3
FEATURE = "jobs"
# The metrics dimension of jobs run through the Message Batches API (cost by feature shows the split).
BATCH_FEATURE = "batch"


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
    # realtime: one SQS message per job, results in seconds to minutes, full price.
    # batch: one Message Batch for the whole list, results within 24 h, half price.
    mode: JobMode = "realtime"


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


class BatchPollMessage(BaseModel):
    """The SQS message that polls one message batch: which batch, whose jobs, since when."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["poll_batch"]
    batch_id: str = Field(min_length=1, max_length=200)
    user: str = Field(min_length=1)
    job_ids: list[str] = Field(min_length=1, max_length=MAX_ITEMS)
    submitted_at: int = Field(ge=0)  # epoch seconds
    polls: int = Field(0, ge=0)

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
    # Message batches: how long between polls (BATCH_POLL_SECONDS), and when to stop trying to
    # read a batch that keeps failing (a batch ends within 24 h; its results are kept 29 days).
    batch_poll_seconds: int = 60
    batch_max_age_seconds: int = 3 * 86_400

    @classmethod
    def from_settings(cls, settings: Settings) -> JobOptions:
        return cls(
            concurrency=settings.batch_max_concurrency,
            batch_poll_seconds=settings.batch_poll_seconds,
        )


IN_CALL_RETRY_WAIT_SECONDS = 2.0


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
_NAMES = {"#s": "status", "#r": "result", "#e": "error", "#m": "mode"}


_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items()}


def _from_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


# ---- the job records ----------------------------------------------------------------------


class JobStore:
    """Job records in the state table, keyed `job#<uuid>`. Every status change is conditional."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """One low-level client, shared by every thread (clients are thread-safe, resources are not)."""
        with self._lock:
            if self._client is None:
                self._client = boto3.client("dynamodb")  # type: ignore[call-overload]
            return self._client

    def create(self, records: list[dict[str, Any]]) -> None:
        """All records or none: one transaction (DynamoDB allows 100 items, our maximum)."""
        self.client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": _to_ddb(r),
                        "ConditionExpression": "attribute_not_exists(id)",
                    }
                }
                for r in records
            ]
        )

    def get(self, job_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.table_name, Key=_to_ddb(job_key(job_id)), ConsistentRead=True)
        return _from_ddb(item["Item"]) if "Item" in item else None

    def _update(self, job_id: str, expression: str, condition: str, values: dict[str, Any]) -> bool:
        """One conditional update; False when the condition does not hold (someone got there first)."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_to_ddb(job_key(job_id)),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={k: v for k, v in _NAMES.items() if k in f"{expression} {condition}"},
                ExpressionAttributeValues=_to_ddb({":now": now_iso(), **values}),
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

    def to_batch_running(self, job_ids: list[str], batch_id: str) -> bool:
        """queued -> running with the batch id, all in one transaction (False if any was not queued)."""
        now = now_iso()
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": _to_ddb(job_key(job_id)),
                            "UpdateExpression": (
                                "SET #s = :running, updated_at = :now, started_at = :now, batch_id = :b"
                            ),
                            "ConditionExpression": "#s = :queued",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": _to_ddb(
                                {":running": "running", ":queued": "queued", ":now": now, ":b": batch_id}
                            ),
                        }
                    }
                    for job_id in job_ids
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                return False
            raise
        return True

    def finish_batch_job(
        self, job_id: str, batch_id: str, *, result: dict[str, Any] | None = None, error: dict[str, str] | None = None
    ) -> bool:
        """A batch job's outcome: queued | running -> succeeded (result) or failed (error).

        True only for the one writer that moved it; whoever gets True settles the job's reservation.
        """
        values: dict[str, Any] = {":queued": "queued", ":running": "running", ":b": batch_id, ":batch": "batch"}
        finished = "updated_at = :now, finished_at = :now, batch_id = :b"
        if result is not None:
            expression = f"SET #s = :ok, #r = :result, {finished} REMOVE #e"
            values.update({":ok": "succeeded", ":result": json.dumps(result, separators=(",", ":"))})
        else:
            expression = f"SET #s = :failed, #e = :error, {finished}"
            values.update({":failed": "failed", ":error": error or {"code": "INTERNAL_ERROR", "message": ""}})
        return self._update(job_id, expression, "#s IN (:queued, :running) AND #m = :batch", values)

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
    view["mode"] = record.get("mode", "realtime")
    if record["status"] == "succeeded" and "result" in record:
        view["result"] = json.loads(str(record["result"]))
    elif record["status"] == "failed" and "error" in record:
        error = record["error"]
        view["error"] = {"code": str(error.get("code", "INTERNAL_ERROR")), "message": str(error.get("message", ""))}
    view["created_at"] = record.get("created_at")
    view["updated_at"] = record.get("updated_at")
    return view


# ---- POST /jobs and GET /jobs/{id} ----------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    job_id: str
    status: JobStatus


class _Sqs(Protocol):
    def send_message_batch(self, **kwargs: Any) -> Any: ...


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _aws(service: str) -> Any:
    """One boto3 client per service and container (clients, unlike resources, are thread-safe)."""
    with _clients_lock:
        if service not in _clients:
            _clients[service] = boto3.client(service)  # type: ignore[call-overload]
        return _clients[service]


def reset_clients() -> None:
    """Forget cached AWS clients and stores (tests and the local stack change endpoints)."""
    with _clients_lock:
        _clients.clear()
    _stores.clear()
    _queues.clear()


_stores: dict[str, JobStore] = {}


def store_for(settings: Settings) -> JobStore:
    store = _stores.get(settings.table_name)
    if store is None:
        store = _stores[settings.table_name] = JobStore(settings.table_name)
    return store


def submit(
    body: JobsBody,
    owner: str,
    *,
    settings: Settings | None = None,
    options: JobOptions | None = None,
    sqs: _Sqs | None = None,
    client: Callable[[], ClaudeClient] = get_client,
    deadline: Deadline | None = None,
) -> list[Submitted]:
    """Validate every item, record every job, then enqueue them; all checks happen before any write.

    Realtime jobs whose message could not be sent (after retries) are marked failed, never left
    queued. Raises InternalError when not a single job could be queued. Batch mode: `submit_batch`.
    """
    settings = settings or get_settings()
    options = options or JobOptions.from_settings(settings)
    if not settings.jobs_queue_url:
        raise InternalError("the jobs queue is not configured")
    for index, item in enumerate(body.items):
        if len(item.input) > settings.max_input_chars:
            raise InputTooLarge(
                f"items.{index}.input is {len(item.input)} characters; the limit is {settings.max_input_chars}"
            )
    if body.mode == "batch":
        return submit_batch(
            body, owner, settings=settings, options=options, sqs=sqs, client=client(), deadline=deadline
        )
    now = time.time()
    messages: list[JobMessage] = []
    for index, item in enumerate(body.items):
        message = JobMessage(job_id=str(uuid.uuid4()), user=owner, task=item.task, input=item.input)
        if len(message.to_json().encode()) > MAX_SQS_PAYLOAD_BYTES:
            raise InputTooLarge(f"items.{index}.input is too large for a job message")
        messages.append(message)
    records = [_record(m.job_id, owner, m.task, m.input, "realtime", now, options) for m in messages]
    store = store_for(settings)
    store.create(records)
    unsent = _send_all(sqs or _aws("sqs"), settings.jobs_queue_url, messages)
    for job_id in unsent:
        store.to_failed(
            job_id,
            {"code": "INTERNAL_ERROR", "message": "the job could not be queued; submit it again"},
            message_id=None,
            only_from="queued",
        )
    if len(unsent) == len(messages):
        raise InternalError("the jobs queue is unavailable; no job was queued")
    logger.info(
        "jobs submitted",
        extra={"user": hash_user(owner), "jobs": len(messages), "unsent": len(unsent)},
    )
    return [Submitted(m.job_id, "failed" if m.job_id in unsent else "queued") for m in messages]


def _record(
    job_id: str, owner: str, task: str, text: str, mode: JobMode, now: float, options: JobOptions
) -> dict[str, Any]:
    created = now_iso(now)
    return {
        **job_key(job_id),
        "job_id": job_id,
        "owner": owner,
        "task": task,
        "mode": mode,
        "input_sha256": digest(text),
        "input_chars": len(text),
        "status": "queued",
        "attempts": 0,
        "created_at": created,
        "updated_at": created,
        "expiration": int(now) + options.ttl_seconds,
    }


def submit_batch(
    body: JobsBody,
    owner: str,
    *,
    settings: Settings,
    options: JobOptions,
    client: ClaudeClient,
    sqs: Any = None,
    deadline: Deadline | None = None,
) -> list[Submitted]:
    """Run the list as one Message Batch: reserve, record, create the batch, enqueue its poll.

    - Each request's params are built by the client exactly as a realtime call's would be.
    - The owner's budget is reserved once for the whole list, at the batch rate (one request in
      the rate-limit window); RATE_LIMITED / BUDGET_EXCEEDED leave nothing recorded.
    - Jobs are recorded (queued) before the batch is created, so nothing upstream is ever
      unaccounted for. If creating the batch fails, every job is failed with the upstream error's
      code, the reservation is given back and that error is raised (nothing ran, nothing is charged).
    - The batch id goes on every job (running) and into one poll message, delayed `batch_poll_seconds`.
    """
    if not settings.jobs_queue_url:
        raise InternalError("the jobs queue is not configured")
    deadline = deadline or Deadline.after(25.0)
    now = time.time()
    job_ids = [str(uuid.uuid4()) for _ in body.items]
    requests: list[dict[str, Any]] = []
    shares: list[Decimal] = []
    for job_id, item in zip(job_ids, body.items, strict=True):
        params, worst = client.batch_params(_batch_request(owner, item.task, item.input))
        requests.append({"custom_id": job_id, "params": params})
        shares.append(worst)
    models = [str(r["params"]["model"]) for r in requests]
    sdk_requests: Any = requests  # the SDK's TypedDicts, built from plain dicts
    reservation = client.ledger.admit(owner, sum(shares, Decimal(0)))
    records = [
        {
            **_record(job_id, owner, item.task, item.input, "batch", now, options),
            "model": model,
            "reservation": {"user_key": reservation.user_key, "day": reservation.day, "amount": str(share)},
        }
        for job_id, item, share, model in zip(job_ids, body.items, shares, models, strict=True)
    ]
    store = store_for(settings)
    try:
        store.create(records)
    except Exception:
        client.ledger.release(reservation)
        raise

    def fail_all(exc: ClaudeError) -> None:
        for job_id in job_ids:
            store.to_failed(job_id, error_of(exc), message_id=None)
        client.ledger.release(reservation)

    try:
        # Not retried: a create that timed out may still have made a batch, and two would run (and bill) twice.
        batch = client.batches(
            lambda b, timeout: b.create(requests=sdk_requests, timeout=timeout), deadline, retry=False
        )
    except ClaudeError as exc:
        logger.warning("message batch not created", extra={"code": exc.code, "jobs": len(job_ids)})
        fail_all(exc)
        raise
    batch_id = str(batch.id)
    running = store.to_batch_running(job_ids, batch_id)
    poll = BatchPollMessage(kind="poll_batch", batch_id=batch_id, user=owner, job_ids=job_ids, submitted_at=int(now))
    if not _send_poll(sqs or _aws("sqs"), settings.jobs_queue_url, poll, options.batch_poll_seconds):
        # Without a poll nobody would ever collect the results: stop the batch and say so.
        with contextlib.suppress(ClaudeError):
            client.batches(lambda b, timeout: b.cancel(batch_id, timeout=timeout), deadline)
        fail_all(InternalError("the batch could not be tracked; submit it again"))
        raise InternalError("the jobs queue is unavailable; the batch was canceled")
    logger.info(
        "jobs submitted as a message batch",
        extra={"user": hash_user(owner), "jobs": len(job_ids), "batch_id": batch_id},
    )
    status: JobStatus = "running" if running else "queued"
    return [Submitted(job_id, status) for job_id in job_ids]


def _batch_request(owner: str, task: str, text: str) -> ClaudeRequest:
    return ClaudeRequest(feature=BATCH_FEATURE, task=task, user_id=owner, prompt=text)


def _send_poll(sqs: Any, queue_url: str, poll: BatchPollMessage, delay: float) -> bool:
    """Send a poll message (retried); False if SQS never took it."""
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            sqs.send_message(
                QueueUrl=queue_url, MessageBody=poll.to_json(), DelaySeconds=max(0, min(900, math.ceil(delay)))
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("poll message not sent", extra={"attempt": attempt, "error_type": type(exc).__name__})
            if attempt < SEND_ATTEMPTS:
                time.sleep(0.05 * 2**attempt)
        else:
            return True
    return False


def _chunks(messages: list[JobMessage]) -> Iterable[list[JobMessage]]:
    """At most 10 entries and MAX_SQS_PAYLOAD_BYTES per SendMessageBatch call."""
    chunk: list[JobMessage] = []
    size = 0
    for message in messages:
        length = len(message.to_json().encode())
        if chunk and (len(chunk) == SEND_BATCH_ENTRIES or size + length > MAX_SQS_PAYLOAD_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += length
    if chunk:
        yield chunk


def _send_all(sqs: _Sqs, queue_url: str, messages: list[JobMessage]) -> set[str]:
    """Send every message; retry the entries SQS did not take. Returns the job ids never sent."""
    unsent: set[str] = set()
    for chunk in _chunks(messages):
        pending = {m.job_id: m for m in chunk}
        for attempt in range(1, SEND_ATTEMPTS + 1):
            entries = [{"Id": str(i), "MessageBody": m.to_json()} for i, m in enumerate(pending.values())]
            by_entry = dict(zip((e["Id"] for e in entries), pending.values(), strict=True))
            try:
                response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                logger.warning("job send failed", extra={"attempt": attempt, "error_type": type(exc).__name__})
            else:
                failed = {f["Id"] for f in response.get("Failed", [])}
                pending = {m.job_id: m for entry_id, m in by_entry.items() if entry_id in failed}
                if not pending:
                    break
                permanent = any(f.get("SenderFault") for f in response.get("Failed", []))
                logger.warning("some job messages were not sent", extra={"count": len(pending), "attempt": attempt})
                if permanent:
                    break
            if attempt < SEND_ATTEMPTS:
                time.sleep(0.05 * 2**attempt)
        unsent.update(pending)
    return unsent


def get_job(job_id: str, owner: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """The job for its owner; anyone else (or an unknown id) gets the same NotFound."""
    settings = settings or get_settings()
    record = store_for(settings).get(job_id) if _plausible_id(job_id) else None
    if record is None or record.get("owner") != owner:
        raise NotFound("no such job")
    return public_view(record)


def _plausible_id(job_id: str) -> bool:
    try:
        uuid.UUID(job_id)
    except ValueError:
        return False
    return True


# ---- the consumer -------------------------------------------------------------------------


class RecordReturned(Exception):
    """The record goes back to the queue (a batch item failure); `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _JobFinished(Exception):
    """The job succeeded elsewhere while this delivery waited."""


@dataclass(frozen=True)
class QueueInfo:
    """What the consumer needs to know about its queue, read once per container."""

    url: str
    max_receive_count: int | None


_queues: dict[str, QueueInfo] = {}


def queue_info(url: str, sqs: Any) -> QueueInfo:
    """maxReceiveCount from the queue's RedrivePolicy (None: no DLQ, so nothing is ever the last receive)."""
    info = _queues.get(url)
    if info is None:
        max_receive: int | None = None
        try:
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
            policy = attributes.get("RedrivePolicy")
            if policy:
                max_receive = int(json.loads(policy)["maxReceiveCount"])
        except (ClientError, BotoCoreError, KeyError, ValueError):
            logger.exception("could not read the queue's redrive policy")
        if max_receive is None:
            logger.error("jobs queue has no redrive policy: failed jobs cannot reach a dead-letter queue")
        info = _queues[url] = QueueInfo(url, max_receive)
    return info


class ConcurrentBatchProcessor(BatchProcessor):
    """Powertools' BatchProcessor, with the records of one batch run on a bounded thread pool.

    Powertools processes records one after another; the success/failure bookkeeping it keeps is
    append-only, so running `_process_record` concurrently keeps the partial-response semantics
    exactly (failures are re-ordered as the records came, for a stable response).
    """

    def __init__(self, pool: ThreadPoolExecutor | None) -> None:
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self.pool = pool

    def process(self) -> list[tuple[Any, ...]]:
        if self.pool is None or len(self.records) <= 1:
            return super().process()
        results = list(self.pool.map(self._process_record, self.records))
        order = {record["messageId"]: index for index, record in enumerate(self.records)}
        self.fail_messages.sort(key=lambda msg: order.get(str(getattr(msg, "message_id", "")), 0))
        return results


class JobConsumer:
    """The batch function: one SQS event in, a partial batch response out."""

    def __init__(
        self,
        settings: Settings | None = None,
        options: JobOptions | None = None,
        *,
        client: Callable[[], ClaudeClient] = get_client,
    ) -> None:
        self.settings = settings or get_settings()
        self.options = options or JobOptions(concurrency=self.settings.batch_max_concurrency)
        self.client = client
        self.store = store_for(self.settings)
        self.persistence = DynamoDBPersistenceLayer(table_name=self.settings.table_name)
        if not self.settings.jobs_queue_url:
            raise InternalError("the jobs queue is not configured")
        self.queue_url = self.settings.jobs_queue_url
        self._pools = threading.local()

    def _pool(self) -> ThreadPoolExecutor | None:
        """A pool kept across invocations (one per invoking thread), so its workers keep their
        boto3 resources warm; Lambda has one invoking thread, the local event source several."""
        if self.options.concurrency <= 1:
            return None
        pool: ThreadPoolExecutor | None = getattr(self._pools, "pool", None)
        if pool is None:
            pool = self._pools.pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="job")
        return pool

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        sqs = _aws("sqs")
        queue = queue_info(self.queue_url, sqs)
        config = IdempotencyConfig(
            event_key_jmespath="job_id",
            expires_after_seconds=self.options.ttl_seconds,
            raise_on_no_idempotency_key=True,
        )
        config.register_lambda_context(context)
        run_once = idempotent_function(
            self._execute,
            data_keyword_argument="job",
            persistence_store=self.persistence,
            config=config,
            key_prefix="idem#job",
        )

        def record_handler(record: SQSRecord) -> str:
            return self._process(record, context, sqs, queue, run_once)

        processor = ConcurrentBatchProcessor(self._pool())
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        return dict(response)

    # -- one record ---------------------------------------------------------------------

    def _process(self, record: SQSRecord, context: LambdaContextLike, sqs: Any, queue: QueueInfo, run_once: Any) -> str:
        poll = _parse_poll(record.body)
        if poll is not None:
            return self._poll(record, context, sqs, poll)
        receive_count = int(record.attributes.approximate_receive_count or "1")
        last = queue.max_receive_count is not None and receive_count >= queue.max_receive_count
        message_id = record.message_id

        if context.get_remaining_time_in_millis() / 1000 < self.options.min_start_seconds:
            # Not started, not touched: back to the queue (or re-sent, if this was its last receive).
            if last:
                parsed = _parse(record.body)
                if parsed is not None and self._defer(sqs, parsed, 0):
                    return "deferred"
            self._visibility(sqs, record, 0)
            raise RecordReturned("not started: invocation near its deadline")

        message = _parse(record.body)
        if message is None:
            self._fail_job_of_unreadable(record.body, message_id)
            return self._poison(sqs, record, queue, "malformed message")
        job = self.store.get(message.job_id)
        if job is None:
            return self._poison(sqs, record, queue, "unknown job")
        if job.get("owner") != message.user:
            return self._poison(sqs, record, queue, "message user is not the job's owner")
        if job.get("task") != message.task or job.get("input_sha256") != digest(message.input):
            self.store.to_failed(
                message.job_id,
                {"code": "INTERNAL_ERROR", "message": "the job's message does not match the job"},
                message_id=message_id,
            )
            return self._poison(sqs, record, queue, "message does not match the job")
        status = job.get("status")
        if status == "succeeded":
            return "duplicate"
        if status == "failed" and job.get("failed_message_id") == message_id:
            # This delivery already failed the job; it is on its way to the DLQ.
            return self._poison(sqs, record, queue, "job already failed")

        try:
            result: dict[str, Any] = run_once(job=message.model_dump(), message_id=message_id, context=context)
        except _JobFinished:
            return "duplicate"
        except IdempotencyAlreadyInProgressError:
            # Another delivery of this job is running right now; look again later.
            if last and self._defer(sqs, message, self.options.in_progress_retry_seconds):
                return "deferred"
            self._visibility(sqs, record, self.options.in_progress_retry_seconds)
            raise RecordReturned("in progress elsewhere") from None
        except RateLimited as exc:
            # The owner's minute window is full: wait for the next one without using up a receive.
            self.store.to_queued(message.job_id, error_of(exc))
            if message.deferrals < self.options.max_deferrals and self._defer(sqs, message, exc.retry_after or 60):
                return "deferred"
            return self._terminal(sqs, record, queue, message, exc)
        except ClaudeError as exc:
            if exc.retryable and not last:
                self.store.to_queued(message.job_id, error_of(exc))
                self._visibility(sqs, record, self._retry_delay(exc, receive_count))
                raise RecordReturned(f"retry later: {exc.code}") from None
            return self._terminal(sqs, record, queue, message, exc)
        except Exception as exc:  # a bug or a broken dependency (DynamoDB, ...)
            logger.exception("job failed unexpectedly", extra={"job_id": message.job_id})
            if last:
                return self._terminal(sqs, record, queue, message, InternalError())
            self._visibility(sqs, record, self._retry_delay(None, receive_count))
            raise RecordReturned(f"retry later: {type(exc).__name__}") from None

        # The result is safe in the idempotency record: if this write fails, a redelivery replays it.
        try:
            self.store.to_succeeded(message.job_id, result)
        except (ClientError, BotoCoreError) as exc:
            logger.exception("could not record a job's result; it will be replayed")
            self._visibility(sqs, record, self._retry_delay(None, receive_count))
            raise RecordReturned("result not recorded") from exc
        logger.info("job succeeded", extra={"job_id": message.job_id, "receive_count": receive_count})
        return "succeeded"

    def _execute(self, job: dict[str, Any], message_id: str, context: LambdaContextLike) -> dict[str, Any]:
        """The once-only part: mark running, call Claude (reserving and charging the owner's budget)."""
        message = JobMessage.model_validate(job)
        if not self.store.to_running(message.job_id, message_id):
            raise _JobFinished()
        deadline = Deadline.from_context(context, self.settings.deadline_margin_seconds)
        request = ClaudeRequest(
            feature=FEATURE,
            task=message.task,
            user_id=message.user,
            prompt=message.input,
            # A longer retry-after is cheaper spent invisible in the queue than sleeping in Lambda.
            max_retry_wait=IN_CALL_RETRY_WAIT_SECONDS,
        )
        return result_of(self.client().complete(request, deadline))

    # -- message batches ------------------------------------------------------------------

    def _poll(self, record: SQSRecord, context: LambdaContextLike, sqs: Any, poll: BatchPollMessage) -> str:
        """One look at a message batch: not ended, poll again later; ended, write every result back.

        The poll message is never lost: it is deleted only once the batch's results are written, or
        after a fresh copy was sent (still running, an upstream failure, too little time left).
        """
        if context.get_remaining_time_in_millis() / 1000 < self.options.min_start_seconds:
            return self._repoll(sqs, record, poll, 0, "invocation near its deadline")
        deadline = Deadline.from_context(context, self.settings.deadline_margin_seconds)
        client = self.client()
        batch_id = poll.batch_id
        try:
            batch = client.batches(lambda b, timeout: b.retrieve(batch_id, timeout=timeout), deadline)
            if batch.processing_status != "ended":
                return self._repoll(sqs, record, poll, self.options.batch_poll_seconds, "in progress")
            results = client.batches(lambda b, timeout: list(b.results(batch_id, timeout=timeout)), deadline)
        except ClaudeError as exc:
            too_old = time.time() - poll.submitted_at > self.options.batch_max_age_seconds
            if isinstance(exc, UpstreamRejected) or too_old:
                # The batch is gone (unknown id) or unreadable for days: settle what is left as failed.
                logger.error("message batch cannot be read; its jobs fail", extra={"batch_id": batch_id})
                failure = UpstreamError("the batch's results could not be read; submit the job again")
                self._write_batch(client, poll, {}, missing=failure)
                return "batch lost"
            logger.warning("message batch poll failed", extra={"batch_id": batch_id, "code": exc.code})
            return self._repoll(sqs, record, poll, self.options.batch_poll_seconds, f"upstream: {exc.code}")
        outcomes = {str(line.custom_id): line.result for line in results}
        finished = self._write_batch(client, poll, outcomes, missing=InternalError("the batch returned no result"))
        logger.info("message batch collected", extra={"batch_id": batch_id, "jobs_finished": finished})
        return "batch collected"

    def _write_batch(
        self, client: ClaudeClient, poll: BatchPollMessage, outcomes: dict[str, Any], *, missing: ClaudeError
    ) -> int:
        """Each job's outcome onto its record; only the writer that wins the transition settles it.

        A DynamoDB failure escapes: the poll message comes back and the jobs already written are
        skipped by their conditions, so nothing is charged twice.
        """
        finished = 0
        for job_id in poll.job_ids:
            job = self.store.get(job_id) if _plausible_id(job_id) else None
            if job is None or job.get("owner") != poll.user or job.get("mode") != "batch":
                logger.error("poll message names a job that is not its batch's", extra={"batch_id": poll.batch_id})
                continue
            if job.get("status") not in ("queued", "running"):
                continue  # written by an earlier delivery of this poll
            request = _batch_request(poll.user, str(job["task"]), "")
            reserved = job.get("reservation") or {}
            reservation = Reservation(
                str(reserved.get("user_key", hash_user(poll.user))),
                str(reserved.get("day", "")),
                Decimal(str(reserved.get("amount", "0"))),
            )
            outcome = outcomes.get(job_id)
            if outcome is not None and outcome.type == "succeeded":
                result = client.batch_result(outcome.message)
                if self.store.finish_batch_job(job_id, poll.batch_id, result=result_of(result)):
                    client.settle_batch(request, reservation, result)
                    finished += 1
                continue
            exc = missing if outcome is None else _batch_error(outcome)
            if self.store.finish_batch_job(job_id, poll.batch_id, error=error_of(exc)):
                client.release_batch(request, reservation, str(job.get("model", "unknown")), exc)
                finished += 1
        return finished

    def _repoll(self, sqs: Any, record: SQSRecord, poll: BatchPollMessage, seconds: float, reason: str) -> str:
        """Send the next poll (delayed) and let this one be deleted; if it cannot be sent, this one
        comes back after the same delay instead."""
        again = poll.model_copy(update={"polls": poll.polls + 1})
        if _send_poll(sqs, self.queue_url, again, seconds):
            logger.info("message batch polled again later", extra={"batch_id": poll.batch_id, "reason": reason})
            return "polling"
        self._visibility(sqs, record, seconds)
        raise RecordReturned(f"poll not re-sent: {reason}")

    # -- outcomes -------------------------------------------------------------------------

    def _terminal(self, sqs: Any, record: SQSRecord, queue: QueueInfo, message: JobMessage, exc: ClaudeError) -> str:
        """Mark the job failed with the reason, then send the message on to the DLQ."""
        self.store.to_failed(message.job_id, error_of(exc), message_id=record.message_id)
        logger.warning("job failed", extra={"job_id": message.job_id, "code": exc.code})
        return self._poison(sqs, record, queue, f"failed: {exc.code}")

    def _poison(self, sqs: Any, record: SQSRecord, queue: QueueInfo, reason: str) -> str:
        """Report failure at once (visibility 0) until SQS moves the message to the DLQ."""
        logger.warning("job message goes to the dead-letter queue", extra={"reason": reason})
        if queue.max_receive_count is None:
            # Without a DLQ the message would cycle forever; the job (if any) is already failed.
            return "dropped"
        self._visibility(sqs, record, 0)
        raise RecordReturned(reason)

    def _fail_job_of_unreadable(self, body: str, message_id: str) -> None:
        try:
            job_id = json.loads(body).get("job_id")
        except (ValueError, AttributeError):
            return
        if isinstance(job_id, str) and _plausible_id(job_id):
            self.store.to_failed(
                job_id, {"code": "INTERNAL_ERROR", "message": "the job's message was malformed"}, message_id=message_id
            )

    def _retry_delay(self, exc: ClaudeError | None, receive_count: int) -> float:
        if exc is not None and exc.retry_after is not None:
            return exc.retry_after
        o = self.options
        return float(min(o.retry_max_seconds, o.retry_base_seconds * 2.0 ** max(0, receive_count - 1)))

    def _visibility(self, sqs: Any, record: SQSRecord, seconds: float) -> None:
        """When this record is seen again. If the call fails it simply reappears after the queue's timeout."""
        try:
            sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=max(0, min(43_200, math.ceil(seconds))),
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not change message visibility", extra={"error_type": type(exc).__name__})

    def _defer(self, sqs: Any, message: JobMessage, seconds: float) -> bool:
        """Re-send the message with a delay (the original is then deleted): a fresh receive count."""
        again = message.model_copy(update={"deferrals": message.deferrals + 1})
        try:
            sqs.send_message(
                QueueUrl=self.queue_url, MessageBody=again.to_json(), DelaySeconds=max(0, min(900, math.ceil(seconds)))
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not defer a job message", extra={"error_type": type(exc).__name__})
            return False
        return True


# An errored batch request's error type -> what the job reports (never the upstream message).
_BATCH_ERRORS: dict[str, type[ClaudeError]] = {
    "invalid_request_error": UpstreamRejected,
    "not_found_error": UpstreamRejected,
    "request_too_large": InputTooLarge,
    "authentication_error": UpstreamAuth,
    "permission_error": UpstreamAuth,
    "billing_error": UpstreamUnavailable,
    "rate_limit_error": UpstreamUnavailable,
    "overloaded_error": UpstreamUnavailable,
    "api_error": UpstreamServerError,
    "timeout_error": UpstreamTimeout,
}


def _batch_error(outcome: Any) -> ClaudeError:
    """The ClaudeError for a batch result that did not succeed (errored, expired, canceled)."""
    if outcome.type == "expired":
        return UpstreamTimeout("the batch expired before this job ran; submit it again")
    if outcome.type == "canceled":
        return UpstreamError("the batch was canceled before this job ran")
    error = getattr(getattr(outcome, "error", None), "error", None)
    kind = str(getattr(error, "type", "") or "")
    return _BATCH_ERRORS.get(kind, UpstreamError)()


def _parse_poll(body: str) -> BatchPollMessage | None:
    if '"poll_batch"' not in body:
        return None
    try:
        return BatchPollMessage.model_validate_json(body)
    except ValidationError:
        return None


def _parse(body: str) -> JobMessage | None:
    try:
        return JobMessage.model_validate_json(body)
    except ValidationError:
        return None


_consumer: JobConsumer | None = None
_consumer_lock = threading.Lock()


def get_consumer() -> JobConsumer:
    """The container's consumer, built on first use."""
    global _consumer
    with _consumer_lock:
        if _consumer is None:
            _consumer = JobConsumer()
        return _consumer


def reset_consumer() -> None:
    global _consumer
    with _consumer_lock:
        _consumer = None
    reset_clients()
