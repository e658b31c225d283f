"""POST /jobs and GET /jobs/{id}: record and enqueue all or nothing; read back for the owner only."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from claudekit.claude.client import ClaudeClient, get_client
from claudekit.deadline import Deadline
from claudekit.errors import InputTooLarge, InternalError, InvalidRequest, NotFound
from claudekit.settings import Settings, get_settings
from claudekit.store import ledger
from claudekit.store.jobs import public_view, store_for
from claudekit.tasks.jobs import batch_mode, queue
from claudekit.tasks.jobs.models import (
    MAX_SQS_PAYLOAD_BYTES,
    JobMessage,
    JobsBody,
    input_text,
    is_job_id,
    message_input,
)
from claudekit.tasks.jobs.records import Submitted, create, new_record
from claudekit.telemetry import hash_user, logger


def submit(
    body: JobsBody,
    owner: str,
    *,
    settings: Settings | None = None,
    sqs: queue.Sqs | None = None,
    client: Callable[[], ClaudeClient] = get_client,
    deadline: Deadline | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Submitted]:
    """Validate every item, record every job, then enqueue them; all checks happen before any write.

    A submission counts as one request against the owner's per-minute rate limit (batch mode
    counts it when reserving the budget), and is refused whole (TooManyJobsInFlight, 429) if it
    would put more than MAX_JOBS_IN_FLIGHT of the owner's jobs in flight.
    Realtime jobs whose message could not be sent (after retries) are marked failed, never left
    queued. Raises InternalError when not a single job could be queued. Batch mode: `batch_mode.submit`.
    """
    settings = settings or get_settings()
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
        return batch_mode.submit(body, owner, settings=settings, sqs=sqs, client=client(), deadline=deadline)
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
    records = [new_record(m.job_id, owner, m.task, m.input, "realtime", now, settings) for m in messages]
    store = store_for(settings)
    create(store, records, owner, settings)
    unsent = queue.send_all(sqs or queue.sqs(), settings.jobs_queue_url, messages, sleep=sleep)
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


def get_job(job_id: str, owner: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """The job for its owner; anyone else (or an unknown id) gets the same NotFound."""
    settings = settings or get_settings()
    record = store_for(settings).get(job_id) if is_job_id(job_id) else None
    if record is None or record.get("owner") != owner:
        raise NotFound("no such job")
    return public_view(record)
