"""Jobs through the Message Batches API (`"mode": "batch"`): half price, results within 24 h.

`submit` reserves the owner's budget at the batch rate, records the jobs, creates one message
batch (`custom_id` = job id) and enqueues one poll message, delayed BATCH_POLL_SECONDS. The worker
hands every poll message to `Poller.poll`, which looks at the batch: still running, it sends the
next poll (delayed again); ended, it writes each result back to its job. Only the poll that wins
a job's conditional transition settles that job's reservation, so a duplicate never charges twice.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from claudekit.claude import batch_api
from claudekit.claude.client import ClaudeClient
from claudekit.claude.request import ClaudeRequest
from claudekit.deadline import Deadline, LambdaContextLike
from claudekit.errors import (
    ClaudeError,
    InputTooLarge,
    InternalError,
    SpendLimitReached,
    UpstreamAuth,
    UpstreamError,
    UpstreamMalformed,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)
from claudekit.settings import Settings
from claudekit.store.jobs import JobStore, store_for
from claudekit.store.ledger import Reservation
from claudekit.tasks.jobs import kinds, queue
from claudekit.tasks.jobs.models import (
    BATCH_FEATURE,
    BatchPollMessage,
    JobsBody,
    JobStatus,
    error_of,
    is_job_id,
    message_input,
)
from claudekit.tasks.jobs.records import Submitted, create, new_record
from claudekit.telemetry import hash_user, logger

# ---- POST /jobs {"mode": "batch"} -------------------------------------------------------------


def submit(
    body: JobsBody,
    owner: str,
    *,
    settings: Settings,
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
    - The batch id goes on every job (running) and into one poll message, delayed BATCH_POLL_SECONDS.
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
            **new_record(job_id, owner, item.task, message_input(item), "batch", now, settings),
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
    if not queue.send(sqs or queue.sqs(), settings.jobs_queue_url, poll.to_json(), settings.batch_poll_seconds):
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


# ---- poll messages, in the worker ----------------------------------------------------------------


def parse_poll(body: str) -> BatchPollMessage | None:
    """The poll message a record carries, or None (a job message, or something malformed)."""
    if '"poll_batch"' not in body:
        return None
    try:
        return BatchPollMessage.model_validate_json(body)
    except ValidationError:
        return None


class Poller:
    """The worker's Message Batches half: one look at a batch per poll message."""

    def __init__(self, settings: Settings, store: JobStore, client: Callable[[], ClaudeClient], queue_url: str) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.queue_url = queue_url

    def poll(self, record: SQSRecord, context: LambdaContextLike, sqs: Any, poll: BatchPollMessage) -> str:
        """Not ended: poll again later; ended: write every result back.

        The poll message is never lost: it is deleted only once the batch's results are written, or
        after a fresh copy was sent (still running, an upstream failure, too little time left).
        """
        every = self.settings.batch_poll_seconds
        if context.get_remaining_time_in_millis() / 1000 < self.settings.job_min_start_seconds:
            return self._repoll(sqs, record, poll, 0, "invocation near its deadline")
        deadline = Deadline.from_context(context, self.settings.deadline_margin_seconds)
        client = self.client()
        batch_id = poll.batch_id
        try:
            batch = batch_api.call(client, lambda b, timeout: b.retrieve(batch_id, timeout=timeout), deadline)
            if batch.processing_status != "ended":
                return self._repoll(sqs, record, poll, every, "in progress")
            results = batch_api.call(client, lambda b, timeout: list(b.results(batch_id, timeout=timeout)), deadline)
        except ClaudeError as exc:
            too_old = time.time() - poll.submitted_at > self.settings.batch_max_age_seconds
            if isinstance(exc, UpstreamRejected) or too_old:
                # The batch is gone (unknown id) or unreadable for days: settle what is left as failed.
                logger.error("message batch cannot be read; its jobs fail", extra={"batch_id": batch_id})
                failure = UpstreamError("the batch's results could not be read; submit the job again")
                self.write_results(client, poll, {}, missing=failure)
                return "batch lost"
            logger.warning("message batch poll failed", extra={"batch_id": batch_id, "code": exc.code})
            return self._repoll(sqs, record, poll, every, f"upstream: {exc.code}")
        outcomes = {str(line.custom_id): line.result for line in results}
        finished = self.write_results(client, poll, outcomes, missing=InternalError("the batch returned no result"))
        logger.info("message batch collected", extra={"batch_id": batch_id, "jobs_finished": finished})
        return "batch collected"

    def write_results(
        self, client: ClaudeClient, poll: BatchPollMessage, outcomes: dict[str, Any], *, missing: ClaudeError
    ) -> int:
        """Each job's outcome onto its record; only the writer that wins the transition settles it.

        A DynamoDB failure escapes: the poll message comes back and the jobs already written are
        skipped by their conditions, so nothing is charged twice.
        """
        finished = 0
        for job_id in poll.job_ids:
            job = self.store.get(job_id) if is_job_id(job_id) else None
            if job is None or job.get("owner") != poll.user or job.get("mode") != "batch":
                logger.error("poll message names a job that is not its batch's", extra={"batch_id": poll.batch_id})
                continue
            if job.get("status") not in ("queued", "running"):
                continue  # written by an earlier delivery of this poll
            request = _settle_request(poll.user, str(job["task"]))
            reserved = job.get("reservation") or {}
            reservation = Reservation(
                str(reserved.get("user_key", hash_user(poll.user))),
                str(reserved.get("day", "")),
                Decimal(str(reserved.get("amount", "0"))),
            )
            outcome = outcomes.get(job_id)
            if outcome is not None and outcome.type == "succeeded":
                try:
                    result = batch_api.result(client, outcome.message, on=reservation.day)
                except ClaudeError as unusable:
                    # Upstream says it answered (and billed) but its usage cannot be trusted: fail the
                    # job and keep the reservation, so the budget stays charged until reconciled.
                    if self.store.finish_batch_job(job_id, poll.batch_id, error=error_of(unusable)):
                        logger.error(
                            "batch result with unusable usage; reservation kept for reconciliation",
                            extra={"batch_id": poll.batch_id, "job_id": job_id, "code": unusable.code},
                        )
                        finished += 1
                    continue
                try:
                    answer = kinds.batch_answer(str(job["task"]), job.get("answer_check"), result)
                except ClaudeError as invalid:
                    # Answered and billed, but not a valid answer (a batch has no repair turn): charged, failed.
                    if self.store.finish_batch_job(job_id, poll.batch_id, error=error_of(invalid)):
                        batch_api.settle(client, request, reservation, result)
                        finished += 1
                    continue
                if self.store.finish_batch_job(job_id, poll.batch_id, result=answer):
                    batch_api.settle(client, request, reservation, result)
                    finished += 1
                continue
            exc = missing if outcome is None else _outcome_error(outcome)
            if self.store.finish_batch_job(job_id, poll.batch_id, error=error_of(exc)):
                batch_api.release(client, request, reservation, str(job.get("model", "unknown")), exc)
                finished += 1
        return finished

    def _repoll(self, sqs: Any, record: SQSRecord, poll: BatchPollMessage, seconds: float, reason: str) -> str:
        """Send the next poll (delayed) and let this one be deleted; if it cannot be sent, this one
        comes back after the same delay instead."""
        again = poll.model_copy(update={"polls": poll.polls + 1})
        if queue.send(sqs, self.queue_url, again.to_json(), seconds):
            logger.info("message batch polled again later", extra={"batch_id": poll.batch_id, "reason": reason})
            return "polling"
        queue.change_visibility(sqs, self.queue_url, record.receipt_handle, seconds)
        raise queue.RecordReturned(f"poll not re-sent: {reason}")


def _settle_request(owner: str, task: str) -> ClaudeRequest:
    """What settling a batch job needs of its request: its feature, task and owner."""
    return ClaudeRequest(feature=BATCH_FEATURE, task=task, user_id=owner, prompt="")


# An errored batch request's error type -> what the job reports (never the upstream message).
# The same classes as a realtime call, so a spend limit is a spend limit everywhere.
_ERRORS: dict[str, type[ClaudeError]] = {
    "invalid_request_error": UpstreamRejected,
    "not_found_error": UpstreamRejected,
    "request_too_large": InputTooLarge,
    "authentication_error": UpstreamAuth,
    "permission_error": UpstreamAuth,
    "billing_error": SpendLimitReached,
    "rate_limit_error": UpstreamRateLimited,
    "overloaded_error": UpstreamOverloaded,
    "api_error": UpstreamServerError,
    "timeout_error": UpstreamTimeout,
}


def _outcome_error(outcome: Any) -> ClaudeError:
    """The ClaudeError for a batch result that did not succeed (errored, expired, canceled)."""
    if outcome.type == "expired":
        return UpstreamTimeout("the batch expired before this job ran; submit it again")
    if outcome.type == "canceled":
        return UpstreamError("the batch was canceled before this job ran")
    error = getattr(getattr(outcome, "error", None), "error", None)
    kind = str(getattr(error, "type", "") or "")
    details = getattr(error, "details", None)  # a model, or a plain dict where the SDK has no type for it
    code = str((details.get("error_code") if isinstance(details, dict) else getattr(details, "error_code", "")) or "")
    if code.endswith("spend_limit_reached") or code.endswith("billing_unavailable"):
        return SpendLimitReached()
    return _ERRORS.get(kind, UpstreamError)()
