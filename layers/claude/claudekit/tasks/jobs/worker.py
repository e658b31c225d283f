"""The SQS worker: run each queued job at most once, however often SQS delivers its message.

The job record is its own idempotency record. One conditional write claims the job
(queued -> running, with the message id and a lease until this invocation ends) and checks the
message against the record; the result is stored by the one write that ends the job. So:

- the job record says `succeeded`: the message is a duplicate, delete it;
- another delivery holds the lease (it is running the job right now, or crashed while its
  invocation still had time): look again later; once that invocation's time is over, a crashed
  attempt's job is claimed and run again (Powertools idempotency did the same with its
  in-progress record);
- upstream outages (overload, rate limit, open circuit, 5xx, timeout) re-schedule the job as a
  fresh, delayed copy of its message (delay from retry-after, growing), so waiting never spends
  the receives that catch poison messages; a job gives up only after JOB_MAX_AGE_SECONDS;
- permanent failures and malformed messages mark the job `failed` with the reason and let SQS
  move the message to the dead-letter queue.

Status moves queued -> running -> succeeded | failed (running -> queued between retries), each
move a conditional write, so a late or duplicate worker can never overwrite a finished job.
A job costs three DynamoDB writes: the claim, the admission, and the settlement, whose transaction
also records the result and ends the job (`kinds.run`'s `ride`).
Poll messages of Message Batches jobs go to `batch_mode.Poller`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from claudekit.claude.client import ClaudeClient, get_client
from claudekit.deadline import Deadline, LambdaContextLike
from claudekit.errors import TRANSIENT, ClaudeError, InternalError, RateLimited
from claudekit.settings import Settings, get_settings
from claudekit.store import ledger
from claudekit.store.jobs import QueueInfo, queue_info, reset_clients, store_for
from claudekit.tasks.jobs import batch_mode, kinds, queue
from claudekit.tasks.jobs.models import (
    FEATURE,
    IN_CALL_RETRY_WAIT_SECONDS,
    JobMessage,
    error_of,
    input_digest,
    is_job_id,
)
from claudekit.tasks.jobs.queue import RecordReturned
from claudekit.telemetry import logger


class ConcurrentBatchProcessor(BatchProcessor):
    """Powertools' BatchProcessor, with the records of one SQS event run on a bounded thread pool.

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


class JobWorker:
    """The worker function: one SQS event in, a partial batch response out."""

    def __init__(self, settings: Settings | None = None, *, client: Callable[[], ClaudeClient] = get_client) -> None:
        self.settings = settings or get_settings()
        # Records of one SQS event run concurrently.
        self.concurrency = self.settings.worker_record_concurrency
        self.client = client
        self.store = store_for(self.settings)
        if not self.settings.jobs_queue_url:
            raise InternalError("the jobs queue is not configured")
        self.queue_url = self.settings.jobs_queue_url
        self.poller = batch_mode.Poller(self.settings, self.store, client, self.queue_url)
        self._pools = threading.local()

    def _pool(self) -> ThreadPoolExecutor | None:
        """A pool kept across invocations (one per invoking thread), so its workers keep their
        boto3 resources warm; Lambda has one invoking thread, the local event source several."""
        if self.concurrency <= 1:
            return None
        pool: ThreadPoolExecutor | None = getattr(self._pools, "pool", None)
        if pool is None:
            pool = self._pools.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="job")
        return pool

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        sqs = queue.sqs()
        info = queue_info(self.queue_url, sqs)

        def record_handler(record: SQSRecord) -> str:
            return self._process(record, context, sqs, info)

        processor = ConcurrentBatchProcessor(self._pool())
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        return dict(response)

    # -- one record ---------------------------------------------------------------------

    def _process(self, record: SQSRecord, context: LambdaContextLike, sqs: Any, info: QueueInfo) -> str:
        poll = batch_mode.parse_poll(record.body)
        if poll is not None:
            return self.poller.poll(record, context, sqs, poll)
        receive_count = int(record.attributes.approximate_receive_count or "1")
        last = info.max_receive_count is not None and receive_count >= info.max_receive_count
        message_id = record.message_id

        remaining = context.get_remaining_time_in_millis() / 1000
        if remaining < self.settings.job_min_start_seconds:
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
            return self._poison(sqs, record, info, "malformed message")
        # The lease lasts as long as this invocation may: past it, this attempt is surely over.
        claim = self.store.claim(
            message.job_id,
            message_id,
            owner=message.user,
            task=message.task,
            input_sha256=input_digest(message.input),
            lease_until=time.time() + remaining,
        )
        if not claim.won:
            return self._not_claimed(sqs, record, info, message, claim.record, last)

        try:
            result, recorded = self._run(message, context)
        except RateLimited as exc:
            # The owner's minute window is full: wait for the next one without using up a receive.
            self.store.to_queued(message.job_id, error_of(exc))
            if message.deferrals < self.settings.job_max_deferrals and self._defer(sqs, message, exc.retry_after or 60):
                return "deferred"
            return self._terminal(sqs, record, info, message, exc)
        except ClaudeError as exc:
            if isinstance(exc, TRANSIENT):
                return self._wait_out(sqs, record, info, message, exc)
            return self._terminal(sqs, record, info, message, exc)
        except Exception as exc:  # a bug or a broken dependency (DynamoDB, ...)
            logger.exception("job failed unexpectedly", extra={"job_id": message.job_id})
            if last:
                return self._terminal(sqs, record, info, message, InternalError())
            # Give the lease up so the redelivery may run the job (best effort: else it waits it out).
            try:
                self.store.to_queued(message.job_id, error_of(InternalError()))
            except (ClientError, BotoCoreError):
                logger.exception("could not give a job's lease up")
            self._visibility(sqs, record, self._retry_delay(None, receive_count))
            raise RecordReturned(f"retry later: {type(exc).__name__}") from None

        # Usually the result and the end of the job rode in the call's settlement. Else (a repaired
        # structured answer, a job no longer in flight, a settlement that could not be written) one
        # write of its own. If that fails the lease stays: the job is run again only once this
        # invocation's time is over (a crash before the settlement does the same).
        if not recorded:
            try:
                self.store.to_succeeded(message.job_id, result, owner=message.user)
            except (ClientError, BotoCoreError) as exc:
                logger.exception("could not record a job's result")
                self._visibility(sqs, record, self._retry_delay(None, receive_count))
                raise RecordReturned("result not recorded") from exc
        logger.info("job succeeded", extra={"job_id": message.job_id, "receive_count": receive_count})
        return "succeeded"

    def _not_claimed(
        self,
        sqs: Any,
        record: SQSRecord,
        info: QueueInfo,
        message: JobMessage,
        job: dict[str, Any] | None,
        last: bool,
    ) -> str:
        """Why the claim failed, from the record as it was: a stranger, a duplicate, or a job
        another delivery is running."""
        if job is None:
            return self._poison(sqs, record, info, "unknown job")
        if job.get("owner") != message.user:
            return self._poison(sqs, record, info, "message user is not the job's owner")
        if job.get("task") != message.task or job.get("input_sha256") != input_digest(message.input):
            self.store.to_failed(
                message.job_id,
                {"code": "INTERNAL_ERROR", "message": "the job's message does not match the job"},
                message_id=record.message_id,
                owner=message.user,
            )
            return self._poison(sqs, record, info, "message does not match the job")
        status = job.get("status")
        if status == "succeeded":
            return "duplicate"
        if status == "failed" and job.get("failed_message_id") == record.message_id:
            # This delivery already failed the job; it is on its way to the DLQ.
            return self._poison(sqs, record, info, "job already failed")
        # Another delivery holds the lease (or won a race for it): look again later.
        wait = self.settings.job_in_progress_retry_seconds
        if last and self._defer(sqs, message, wait):
            return "deferred"
        self._visibility(sqs, record, wait)
        raise RecordReturned("in progress elsewhere")

    def _run(self, message: JobMessage, context: LambdaContextLike) -> tuple[dict[str, Any], bool]:
        """Call Claude, admitted and charged under the owner's plan, from the groups the job was
        posted with: the result, and whether it was recorded with the call's settlement."""
        deadline = Deadline.from_context(context, self.settings.deadline_margin_seconds)

        def ride(result: dict[str, Any]) -> list[dict[str, Any]]:
            return self.store.succeeded_items(message.job_id, result, owner=message.user)

        with ledger.request(message.groups):
            # A longer retry-after is cheaper spent invisible in the queue than sleeping in Lambda.
            return kinds.run(
                self.client(),
                message.item(),
                message.user,
                deadline,
                feature=FEATURE,
                max_retry_wait=IN_CALL_RETRY_WAIT_SECONDS,
                ride=ride,
            )

    # -- outcomes -------------------------------------------------------------------------

    def _terminal(self, sqs: Any, record: SQSRecord, info: QueueInfo, message: JobMessage, exc: ClaudeError) -> str:
        """Mark the job failed with the reason, then send the message on to the DLQ."""
        self.store.to_failed(message.job_id, error_of(exc), message_id=record.message_id, owner=message.user)
        logger.warning("job failed", extra={"job_id": message.job_id, "code": exc.code})
        return self._poison(sqs, record, info, f"failed: {exc.code}")

    def _poison(self, sqs: Any, record: SQSRecord, info: QueueInfo, reason: str) -> str:
        """Report failure at once (visibility 0) until SQS moves the message to the DLQ."""
        logger.warning("job message goes to the dead-letter queue", extra={"reason": reason})
        if info.max_receive_count is None:
            # Without a DLQ the message would cycle forever; the job (if any) is already failed.
            return "dropped"
        self._visibility(sqs, record, 0)
        raise RecordReturned(reason)

    def _fail_job_of_unreadable(self, body: str, message_id: str) -> None:
        try:
            job_id = json.loads(body).get("job_id")
        except (ValueError, AttributeError):
            return
        if isinstance(job_id, str) and is_job_id(job_id):
            self.store.to_failed(
                job_id, {"code": "INTERNAL_ERROR", "message": "the job's message was malformed"}, message_id=message_id
            )

    def _wait_out(self, sqs: Any, record: SQSRecord, info: QueueInfo, message: JobMessage, exc: ClaudeError) -> str:
        """An outage, open circuit, overload or rate limit: re-schedule the job as a fresh, delayed
        copy of its message (the original is then deleted), so waiting never spends the receives
        that detect poison messages. Only a job older than the maximum age gives up."""
        now = time.time()
        sent = record.attributes.sent_timestamp
        first_seen = message.first_seen or (int(sent) // 1000 if sent and sent.isdigit() else int(now))
        age = now - first_seen
        if age >= self.settings.job_max_age_seconds:
            hours = self.settings.job_max_age_seconds / 3600
            expired = type(exc)(f"{exc.message} (gave up after {hours:g} h)", retry_after=exc.retry_after)
            return self._terminal(sqs, record, info, message, expired)
        delay = min(self._wait_delay(exc, message.attempts), max(0.0, self.settings.job_max_age_seconds - age))
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
        s = self.settings
        grown = min(s.job_retry_max_seconds, s.job_retry_base_seconds * 2.0**attempts)
        return min(queue.SQS_MAX_DELAY_SECONDS, max(exc.retry_after or 0.0, grown))

    def _retry_delay(self, exc: ClaudeError | None, receive_count: int) -> float:
        if exc is not None and exc.retry_after is not None:
            return exc.retry_after
        s = self.settings
        return float(min(s.job_retry_max_seconds, s.job_retry_base_seconds * 2.0 ** max(0, receive_count - 1)))

    def _visibility(self, sqs: Any, record: SQSRecord, seconds: float) -> None:
        queue.change_visibility(sqs, self.queue_url, record.receipt_handle, seconds)

    def _defer(self, sqs: Any, message: JobMessage, seconds: float) -> bool:
        """Re-send the message with a delay (the original is then deleted): a fresh receive count."""
        return self._send(sqs, message.model_copy(update={"deferrals": message.deferrals + 1}), seconds)

    def _send(self, sqs: Any, message: JobMessage, seconds: float) -> bool:
        """Send `message` delayed by `seconds` (SQS allows up to 900); False if it could not be sent."""
        return queue.send(sqs, self.queue_url, message.to_json(), seconds)


def _parse(body: str) -> JobMessage | None:
    try:
        return JobMessage.model_validate_json(body)
    except ValidationError:
        return None


_worker: JobWorker | None = None
_worker_lock = threading.Lock()


def get_worker() -> JobWorker:
    """The container's worker, built on first use."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = JobWorker()
        return _worker


def reset_worker() -> None:
    """Forget the worker and the AWS clients it used (tests and the local stack change settings)."""
    global _worker
    with _worker_lock:
        _worker = None
    queue.reset()
    reset_clients()
