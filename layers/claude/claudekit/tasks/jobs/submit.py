"""POST /jobs and GET /jobs/{id}: record and enqueue all or nothing; read back for the owner only."""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from claudekit.claude import batch_api
from claudekit.claude.client import ClaudeClient, get_client
from claudekit.claude.request import ClaudeRequest
from claudekit.deadline import Deadline
from claudekit.errors import (
    ClaudeError,
    InputTooLarge,
    InternalError,
    InvalidRequest,
    NotFound,
    RateLimited,
    UpstreamMalformed,
)
from claudekit.settings import Settings, get_settings
from claudekit.store import ledger
from claudekit.store.jobs import JobStore, _aws, job_key, public_view, store_for
from claudekit.tasks.jobs import kinds
from claudekit.tasks.jobs.models import (
    BATCH_FEATURE,
    MAX_SQS_PAYLOAD_BYTES,
    SEND_ATTEMPTS,
    SEND_BATCH_ENTRIES,
    BatchPollMessage,
    JobMessage,
    JobMode,
    JobOptions,
    JobsBody,
    JobStatus,
    error_of,
    input_digest,
    input_text,
    message_input,
    now_iso,
)
from claudekit.telemetry import hash_user, logger

# ---- POST /jobs and GET /jobs/{id} ----------------------------------------------------------


# When a caller refused for having too many jobs in flight should look again: jobs take seconds
# to minutes, and nothing tells us which of theirs ends first.
IN_FLIGHT_RETRY_SECONDS = 60


class TooManyJobsInFlight(RateLimited):
    """The owner's jobs in flight (queued or running) would pass MAX_JOBS_IN_FLIGHT."""


@dataclass(frozen=True)
class Submitted:
    job_id: str
    status: JobStatus


class _Sqs(Protocol):
    def send_message_batch(self, **kwargs: Any) -> Any: ...


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

    A submission counts as one request against the owner's per-minute rate limit (batch mode
    counts it when reserving the budget), and is refused whole (TooManyJobsInFlight, 429) if it
    would put more than MAX_JOBS_IN_FLIGHT of the owner's jobs in flight.
    Realtime jobs whose message could not be sent (after retries) are marked failed, never left
    queued. Raises InternalError when not a single job could be queued. Batch mode: `submit_batch`.
    """
    settings = settings or get_settings()
    options = options or JobOptions.from_settings(settings)
    if not settings.jobs_queue_url:
        raise InternalError("the jobs queue is not configured")
    for index, item in enumerate(body.items):
        chars = len(input_text(item))
        if chars > settings.max_input_chars:
            raise InputTooLarge(f"items.{index}.input is {chars} characters; the limit is {settings.max_input_chars}")
    if len(body.items) > settings.max_jobs_in_flight:
        # More than may ever be in flight at once: waiting cannot help (422, no Retry-After).
        raise InvalidRequest(
            f"items: {len(body.items)} jobs, but at most {settings.max_jobs_in_flight} may be in flight: "
            "submit fewer at a time"
        )
    if body.mode == "batch":
        return submit_batch(
            body, owner, settings=settings, options=options, sqs=sqs, client=client(), deadline=deadline
        )
    now = time.time()
    messages: list[JobMessage] = []
    caller = ledger.current_caller()
    groups = sorted(caller.groups) if caller is not None else []
    for index, item in enumerate(body.items):
        message = JobMessage(
            job_id=str(uuid.uuid4()), user=owner, task=item.task, input=message_input(item), groups=groups
        )
        if len(message.to_json().encode()) > MAX_SQS_PAYLOAD_BYTES:
            raise InputTooLarge(f"items.{index}.input is too large for a job message")
        messages.append(message)
    # After every check of the input (bad input never counts), the rate limit only: each job
    # reserves its budget when it runs.
    client().ledger.admit(owner, Decimal(0))
    records = [_record(m.job_id, owner, m.task, m.input, "realtime", now, options) for m in messages]
    store = store_for(settings)
    create(store, records, owner, settings)
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


def create(store: JobStore, records: list[dict[str, Any]], owner: str, settings: Settings) -> None:
    """Record the jobs, or refuse them all when they would pass the owner's in-flight cap."""
    if not store.create(records, owner=owner, cap=settings.max_jobs_in_flight):
        in_flight = store.in_flight(owner)
        logger.info("jobs refused: too many in flight", extra={"user": hash_user(owner), "jobs": len(records)})
        raise TooManyJobsInFlight(
            f"{in_flight} of your jobs are queued or running and this submission adds {len(records)}; "
            f"at most {settings.max_jobs_in_flight} may be in flight: wait for some to finish",
            retry_after=IN_FLIGHT_RETRY_SECONDS,
        )


def _record(
    job_id: str, owner: str, task: str, value: str | BaseModel, mode: JobMode, now: float, options: JobOptions
) -> dict[str, Any]:
    created = now_iso(now)
    text = value if isinstance(value, str) else value.model_dump_json()
    return {
        **job_key(job_id),
        "job_id": job_id,
        "owner": owner,
        "task": task,
        "mode": mode,
        "input_sha256": input_digest(value),
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
        params, worst = batch_api.request_params(client, kinds.batch_request(item, owner, BATCH_FEATURE))
        requests.append({"custom_id": job_id, "params": params})
        shares.append(worst)
    models = [str(r["params"]["model"]) for r in requests]
    sdk_requests: Any = requests  # the SDK's TypedDicts, built from plain dicts
    reservation = client.ledger.admit(owner, sum(shares, Decimal(0)), lower="the number or size of the items")
    records = [
        {
            **_record(job_id, owner, item.task, message_input(item), "batch", now, options),
            **({"answer_check": check} if (check := kinds.answer_check(item)) is not None else {}),
            "model": model,
            "reservation": {"user_key": reservation.user_key, "day": reservation.day, "amount": str(share)},
        }
        for job_id, item, share, model in zip(job_ids, body.items, shares, models, strict=True)
    ]
    store = store_for(settings)
    try:
        create(store, records, owner, settings)
    except Exception:
        client.ledger.release(reservation)
        raise

    def fail_all(exc: ClaudeError) -> None:
        for job_id in job_ids:
            store.to_failed(job_id, error_of(exc), message_id=None)
        client.ledger.release(reservation)

    try:
        # Not retried: a create that timed out may still have made a batch, and two would run (and bill) twice.
        batch = batch_api.call(
            client, lambda b, timeout: _created(b.create(requests=sdk_requests, timeout=timeout)), deadline, retry=False
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
            batch_api.call(client, lambda b, timeout: b.cancel(batch_id, timeout=timeout), deadline)
        fail_all(InternalError("the batch could not be tracked; submit it again"))
        raise InternalError("the jobs queue is unavailable; the batch was canceled")
    logger.info(
        "jobs submitted as a message batch",
        extra={"user": hash_user(owner), "jobs": len(job_ids), "batch_id": batch_id},
    )
    status: JobStatus = "running" if running else "queued"
    return [Submitted(job_id, status) for job_id in job_ids]


def _created(batch: Any) -> Any:
    """The create's answer, if it is a message batch: anything else (a Message, an empty object)
    would leave the jobs tracking an id that no batch has, never to finish."""
    batch_id = getattr(batch, "id", None)
    if getattr(batch, "type", None) != "message_batch" or not isinstance(batch_id, str) or not batch_id:
        raise UpstreamMalformed("the model service did not answer the batch request with a message batch")
    return batch


def _batch_request(owner: str, task: str) -> ClaudeRequest:
    """What settling a batch job needs of its request: its feature, task and owner."""
    return ClaudeRequest(feature=BATCH_FEATURE, task=task, user_id=owner, prompt="")


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
