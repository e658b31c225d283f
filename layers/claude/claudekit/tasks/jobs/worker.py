"""The batch function's work: run each queued job at most once, and collect message batches."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from claudekit.claude import batch_api
from claudekit.claude.client import ClaudeClient, get_client
from claudekit.deadline import Deadline, LambdaContextLike
from claudekit.errors import (
    TRANSIENT,
    ClaudeError,
    InputTooLarge,
    InternalError,
    RateLimited,
    SpendLimitReached,
    UpstreamAuth,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
)
from claudekit.settings import Settings, get_settings
from claudekit.store import ledger
from claudekit.store.jobs import QueueInfo, _aws, queue_info, reset_clients, store_for
from claudekit.store.ledger import Reservation
from claudekit.tasks.jobs import kinds
from claudekit.tasks.jobs.models import (
    FEATURE,
    IN_CALL_RETRY_WAIT_SECONDS,
    BatchPollMessage,
    JobMessage,
    JobOptions,
    error_of,
    input_digest,
)
from claudekit.tasks.jobs.submit import _batch_request, _plausible_id, _send_poll
from claudekit.telemetry import hash_user, logger

# SQS DelaySeconds allows at most 15 minutes.
SQS_MAX_DELAY_SECONDS = 900

# ---- the consumer -------------------------------------------------------------------------


class RecordReturned(Exception):
    """The record goes back to the queue (a batch item failure); `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _JobFinished(Exception):
    """The job succeeded elsewhere while this delivery waited."""


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
        self.options = options or JobOptions.from_settings(self.settings)
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
        if job.get("task") != message.task or job.get("input_sha256") != input_digest(message.input):
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
            if isinstance(exc, TRANSIENT):
                return self._wait_out(sqs, record, queue, message, exc)
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
        # A longer retry-after is cheaper spent invisible in the queue than sleeping in Lambda.
        # Admitted under the owner's plan, from the groups the job was posted with.
        with ledger.request(message.groups):
            return kinds.run(
                self.client(),
                message.item(),
                message.user,
                deadline,
                feature=FEATURE,
                max_retry_wait=IN_CALL_RETRY_WAIT_SECONDS,
            )

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
            batch = batch_api.call(client, lambda b, timeout: b.retrieve(batch_id, timeout=timeout), deadline)
            if batch.processing_status != "ended":
                return self._repoll(sqs, record, poll, self.options.batch_poll_seconds, "in progress")
            results = batch_api.call(client, lambda b, timeout: list(b.results(batch_id, timeout=timeout)), deadline)
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
            request = _batch_request(poll.user, str(job["task"]))
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
            exc = missing if outcome is None else _batch_error(outcome)
            if self.store.finish_batch_job(job_id, poll.batch_id, error=error_of(exc)):
                batch_api.release(client, request, reservation, str(job.get("model", "unknown")), exc)
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

    def _wait_out(self, sqs: Any, record: SQSRecord, queue: QueueInfo, message: JobMessage, exc: ClaudeError) -> str:
        """An outage, open circuit, overload or rate limit: re-schedule the job as a fresh, delayed
        copy of its message (the original is then deleted), so waiting never spends the receives
        that detect poison messages. Only a job older than the maximum age gives up."""
        now = time.time()
        sent = record.attributes.sent_timestamp
        first_seen = message.first_seen or (int(sent) // 1000 if sent and sent.isdigit() else int(now))
        age = now - first_seen
        if age >= self.options.max_age_seconds:
            hours = self.options.max_age_seconds / 3600
            expired = type(exc)(f"{exc.message} (gave up after {hours:g} h)", retry_after=exc.retry_after)
            return self._terminal(sqs, record, queue, message, expired)
        delay = min(self._wait_delay(exc, message.attempts), max(0.0, self.options.max_age_seconds - age))
        self.store.to_queued(message.job_id, error_of(exc))
        again = message.model_copy(update={"attempts": message.attempts + 1, "first_seen": first_seen})
        if self._send(sqs, again, delay):
            logger.info(
                "job re-scheduled to wait out upstream",
                extra={
                    "job_id": message.job_id,
                    "code": exc.code,
                    "delay_seconds": round(delay),
                    "attempts": again.attempts,
                },
            )
            return "rescheduled"
        # Could not re-send: let the original come back instead (this does use a receive).
        self._visibility(sqs, record, delay)
        raise RecordReturned(f"retry later: {exc.code}")

    def _wait_delay(self, exc: ClaudeError, attempts: int) -> float:
        """Upstream's (or the circuit's) hint, and a backoff that grows with each re-schedule."""
        o = self.options
        grown = min(o.retry_max_seconds, o.retry_base_seconds * 2.0**attempts)
        return min(SQS_MAX_DELAY_SECONDS, max(exc.retry_after or 0.0, grown))

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
        return self._send(sqs, message.model_copy(update={"deferrals": message.deferrals + 1}), seconds)

    def _send(self, sqs: Any, message: JobMessage, seconds: float) -> bool:
        """Send `message` delayed by `seconds` (SQS allows up to 900); False if it could not be sent."""
        try:
            sqs.send_message(
                QueueUrl=self.queue_url,
                MessageBody=message.to_json(),
                DelaySeconds=max(0, min(SQS_MAX_DELAY_SECONDS, math.ceil(seconds))),
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("could not re-send a job message", extra={"error_type": type(exc).__name__})
            return False
        return True


# An errored batch request's error type -> what the job reports (never the upstream message).
# The same classes as a realtime call, so a spend limit is a spend limit everywhere.
_BATCH_ERRORS: dict[str, type[ClaudeError]] = {
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


def _batch_error(outcome: Any) -> ClaudeError:
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
