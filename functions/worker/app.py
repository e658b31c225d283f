"""Consumes JobsQueue: each record runs its job once, or polls one message batch and writes its
results back (`"kind": "poll_batch"`); failures are reported per record.

All the behaviour (idempotency, retries with visibility timeouts, DLQ, concurrency) lives in
`claudekit.tasks.jobs.worker.JobWorker` (poll messages: `batch_mode.Poller`); this adapter only adds
the Lambda context to the logs.
"""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from claudekit.claude.client import get_client
from claudekit.tasks.jobs.worker import get_worker
from claudekit.telemetry import logger, traced

get_client()  # settings parsed in the init phase: a bad variable fails the cold start, by name


@logger.inject_lambda_context
@traced
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return get_worker().handle(event, context)


snapstart.initialised()  # every import done: the collector runs again, past init's objects
