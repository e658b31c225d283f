"""JobsQueue: the SQS client jobs use, sending (one message, or a list in as few calls as allowed)
and handing a received record back.

One retry policy: every SQS call retries in botocore's standard mode (throttling, 5xx and
connection errors, exponential backoff with jitter). The one thing botocore cannot retry is an
entry SendMessageBatch reports as failed inside a successful answer; `send_all` re-sends those
(tenacity, the sleep injectable so a test can assert the exact waits).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, wait_exponential

from claudekit.tasks.jobs.models import MAX_SQS_PAYLOAD_BYTES, JobMessage
from claudekit.telemetry import logger

# botocore's standard mode: 3 attempts per call, the first included.
RETRY_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 3})
# Rounds of SendMessageBatch for entries SQS reported as failed (not the caller's fault).
SEND_ROUNDS = 3
MAX_ENTRIES_PER_SEND = 10
# SQS DelaySeconds allows at most 15 minutes; a visibility timeout at most 12 hours.
SQS_MAX_DELAY_SECONDS = 900
SQS_MAX_VISIBILITY_SECONDS = 43_200


class RecordReturned(Exception):
    """The record goes back to the queue (one of `batchItemFailures`); `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Sqs(Protocol):
    def send_message_batch(self, **kwargs: Any) -> Any: ...


_client: Any = None
_client_lock = threading.Lock()


def sqs() -> Any:
    """The container's SQS client (thread-safe), built on first use with the standard retry mode."""
    global _client
    with _client_lock:
        if _client is None:
            _client = boto3.client("sqs", config=RETRY_CONFIG)  # type: ignore[call-overload]
        return _client


def reset() -> None:
    """Forget the client (tests and the local stack change endpoints)."""
    global _client
    with _client_lock:
        _client = None


def delay_seconds(seconds: float) -> int:
    return max(0, min(SQS_MAX_DELAY_SECONDS, math.ceil(seconds)))


def send(client: Any, queue_url: str, body: str, delay: float) -> bool:
    """Send one message delayed by `delay` seconds; False if SQS never took it."""
    try:
        client.send_message(QueueUrl=queue_url, MessageBody=body, DelaySeconds=delay_seconds(delay))
    except (ClientError, BotoCoreError) as exc:
        logger.warning("queue message not sent", extra={"error_type": type(exc).__name__})
        return False
    return True


def change_visibility(client: Any, queue_url: str, receipt_handle: str, seconds: float) -> None:
    """When a received record is seen again. If the call fails it reappears after the queue's timeout."""
    try:
        client.change_message_visibility(
            QueueUrl=queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(SQS_MAX_VISIBILITY_SECONDS, math.ceil(seconds))),
        )
    except (ClientError, BotoCoreError) as exc:
        logger.warning("could not change message visibility", extra={"error_type": type(exc).__name__})


def chunks(messages: list[JobMessage]) -> Iterable[list[JobMessage]]:
    """At most 10 entries and MAX_SQS_PAYLOAD_BYTES per SendMessageBatch call."""
    chunk: list[JobMessage] = []
    size = 0
    for message in messages:
        length = len(message.to_json().encode())
        if chunk and (len(chunk) == MAX_ENTRIES_PER_SEND or size + length > MAX_SQS_PAYLOAD_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += length
    if chunk:
        yield chunk


def send_all(
    client: Sqs, queue_url: str, messages: list[JobMessage], *, sleep: Callable[[float], None] = time.sleep
) -> set[str]:
    """Send every message; re-send the entries SQS reported as failed. Returns the job ids never sent."""
    unsent: set[str] = set()
    for chunk in chunks(messages):
        unsent |= _send_chunk(client, queue_url, chunk, sleep)
    return unsent


def _send_chunk(client: Sqs, queue_url: str, chunk: list[JobMessage], sleep: Callable[[float], None]) -> set[str]:
    pending = {m.job_id: m for m in chunk}
    permanent = False

    def one_round() -> set[str]:
        """One SendMessageBatch of what is pending; the job ids still pending after it."""
        nonlocal pending, permanent
        entries = [{"Id": str(i), "MessageBody": m.to_json()} for i, m in enumerate(pending.values())]
        by_entry = dict(zip((e["Id"] for e in entries), pending.values(), strict=True))
        try:
            response = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            # botocore has already retried the call: nothing in this chunk was sent.
            logger.warning("job messages not sent", extra={"count": len(entries), "error_type": type(exc).__name__})
            permanent = True
            return set(pending)
        failed = response.get("Failed", [])
        failed_ids = {f["Id"] for f in failed}
        pending = {m.job_id: m for entry_id, m in by_entry.items() if entry_id in failed_ids}
        if pending:
            permanent = any(f.get("SenderFault") for f in failed)
            logger.warning("some job messages were not sent", extra={"count": len(pending), "permanent": permanent})
        return set(pending)

    retrying = Retrying(
        stop=stop_after_attempt(SEND_ROUNDS),
        wait=wait_exponential(multiplier=0.1, max=1),
        retry=retry_if_result(lambda still: bool(still) and not permanent),
        sleep=sleep,
        retry_error_callback=_last_result,
    )
    result: set[str] = retrying(one_round)
    return result


def _last_result(state: RetryCallState) -> set[str]:
    """After the last round, what is still pending (instead of tenacity's RetryError)."""
    assert state.outcome is not None
    result: set[str] = state.outcome.result()
    return result
