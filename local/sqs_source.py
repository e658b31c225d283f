"""Lambda's SQS event source mapping, emulated on loopback for the local stack and tests.

    for event in sqs_events(template, parameters):  # each function's SQS event, as the template says
        source = SqsEventSource(handler, queue_url, queue_arn, endpoint_url=moto_url,
                                batch_size=event.batch_size, max_concurrency=event.max_concurrency,
                                report_batch_item_failures=event.report_batch_item_failures)
    source.start()
    ...
    source.stop()

The source runs `max_concurrency` pollers (the event's ScalingConfig.MaximumConcurrency: at most
that many invocations at once), each receiving up to BatchSize records. Each poller long-polls the
queue, builds the event Lambda would build (same record fields), invokes the handler with a fake
Lambda context whose remaining time counts down from the function timeout, and then does what
Lambda does with the answer: with ReportBatchItemFailures, it deletes every record not listed in
`batchItemFailures`; without it, a handler that returns deletes the whole batch; if the handler
raised, or the response names a record that was not in the batch, it deletes none (the whole
batch failed). Records left undeleted reappear after their visibility timeout, and SQS itself
(moto honours RedrivePolicy) moves a message to the dead-letter queue after maxReceiveCount receives.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

log = logging.getLogger("local.sqs_source")

# Lambda's defaults for an SQS event that does not say (MaximumConcurrency unset means "up to the
# function's concurrency"; locally that is the stack's instance limit).
DEFAULT_BATCH_SIZE = 10
DEFAULT_MAX_CONCURRENCY = int(os.environ.get("LOCAL_MAX_INSTANCES", "4"))


@dataclass(frozen=True)
class SqsEvent:
    """One function's SQS event in the template, its values resolved."""

    function: str  # logical id
    properties: dict[str, Any]  # the function's Properties
    queue: str  # logical id of the queue
    batch_size: int
    max_concurrency: int
    report_batch_item_failures: bool


def sqs_events(template: dict[str, Any], parameters: dict[str, str]) -> list[SqsEvent]:
    """Every SQS event of every function, found by its type (not by the function's name)."""

    def value(raw: Any, default: int) -> int:
        if isinstance(raw, dict) and set(raw) == {"Ref"}:
            raw = parameters.get(str(raw["Ref"]), default)
        return int(raw) if raw is not None else default

    found = []
    for logical, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        for event in props.get("Events", {}).values():
            if event.get("Type") != "SQS":
                continue
            spec = event.get("Properties", {})
            queue = spec["Queue"]["Fn::GetAtt"]
            found.append(
                SqsEvent(
                    function=logical,
                    properties=props,
                    queue=queue[0] if isinstance(queue, list) else str(queue).split(".")[0],
                    batch_size=value(spec.get("BatchSize"), DEFAULT_BATCH_SIZE),
                    max_concurrency=value(
                        spec.get("ScalingConfig", {}).get("MaximumConcurrency"), DEFAULT_MAX_CONCURRENCY
                    ),
                    report_batch_item_failures="ReportBatchItemFailures" in spec.get("FunctionResponseTypes", []),
                )
            )
    return found


@dataclass
class FakeLambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    timeout_seconds: float = 30.0
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_seconds - time.monotonic()) * 1000))


def _message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """SQS API attribute shape -> the Lambda event's (lower camel case, base64 binary)."""
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        binary = value.get("BinaryValue")
        out[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": base64.b64encode(binary).decode() if isinstance(binary, bytes) else binary,
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value.get("DataType"),
        }
    return out


def build_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The Lambda SQS event for messages as ReceiveMessage returned them."""
    region = queue_arn.split(":")[3] if queue_arn.count(":") >= 5 else "us-east-1"
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes", {})),
                "messageAttributes": _message_attributes(m.get("MessageAttributes", {})),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def failed_ids(response: Any, batch: set[str]) -> set[str]:
    """The records to keep (not delete), read from a handler's response as Lambda reads it.

    No `batchItemFailures` (or an empty list, or no response): every record succeeded. An entry
    without an identifier, or naming a record not in the batch, fails the whole batch.
    """
    if not isinstance(response, dict):
        return set()
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    if not isinstance(failures, list):
        return set(batch)
    ids: set[str] = set()
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(item, str) or not item or item not in batch:
            return set(batch)
        ids.add(item)
    return ids


class SqsEventSource:
    """Polls one queue with up to `max_concurrency` pollers, each invoking `handler` with a batch."""

    def __init__(
        self,
        handler: Callable[[dict[str, Any], Any], Any],
        queue_url: str,
        queue_arn: str,
        *,
        endpoint_url: str | None = None,
        batch_size: int = 10,
        max_concurrency: int = 2,
        report_batch_item_failures: bool = True,
        function_timeout: float = 30.0,
        wait_seconds: int = 1,
    ) -> None:
        self.handler = handler
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.endpoint_url = endpoint_url
        # One ReceiveMessage returns at most 10; larger batches need a batching window (not emulated).
        self.batch_size = max(1, min(10, batch_size))
        self.max_concurrency = max(1, max_concurrency)
        self.report_batch_item_failures = report_batch_item_failures
        self.function_timeout = function_timeout
        self.wait_seconds = max(0, min(20, wait_seconds))
        self.function_name = queue_arn.rsplit(":", 1)[-1] + "-consumer"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.invocations = 0
        self._count_lock = threading.Lock()

    def start(self) -> SqsEventSource:
        if self._threads:
            return self
        self._stop.clear()
        for index in range(self.max_concurrency):
            thread = threading.Thread(target=self._poll, name=f"sqs-poller-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop polling; returns once every poller has finished its current batch."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.function_timeout + self.wait_seconds + 5)
        self._threads.clear()

    def __enter__(self) -> SqsEventSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _client(self) -> Any:
        return boto3.client("sqs", endpoint_url=self.endpoint_url)  # type: ignore[call-overload]

    def _poll(self) -> None:
        sqs = self._client()
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=self.wait_seconds,
                    AttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:  # the endpoint went away (shutdown) or hiccupped: back off briefly
                if self._stop.wait(0.5):
                    return
                log.warning("receive failed", exc_info=True)
                continue
            if messages:
                self._invoke(sqs, messages)

    def _invoke(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        event = build_event(messages, self.queue_arn)
        region = event["Records"][0]["awsRegion"]
        account = self.queue_arn.split(":")[4] if self.queue_arn.count(":") >= 5 else "123456789012"
        context = FakeLambdaContext(
            function_name=self.function_name,
            invoked_function_arn=f"arn:aws:lambda:{region}:{account}:function:{self.function_name}",
            log_group_name=f"/aws/lambda/{self.function_name}",
            timeout_seconds=self.function_timeout,
        )
        with self._count_lock:
            self.invocations += 1
        batch = {m["MessageId"] for m in messages}
        try:
            response = self.handler(event, context)
        except Exception:
            log.exception("handler raised: the whole batch returns to the queue")
            return
        if context.get_remaining_time_in_millis() == 0:
            log.warning(
                "handler ran past the function timeout (%ss); Lambda would have failed it", self.function_timeout
            )
            return
        keep = failed_ids(response, batch) if self.report_batch_item_failures else set()
        done = [m for m in messages if m["MessageId"] not in keep]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
            ]
            try:
                sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception:
                log.warning("delete failed; the messages will be delivered again", exc_info=True)
