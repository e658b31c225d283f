"""Batch jobs: the job record, the queue message, status transitions, and running one job.

A job is born in POST /jobs (`submit`): its record is written to the state table (status
`queued`, owner, task, a digest of the input, never the input itself) and its input travels
in the SQS message. The batch function (`JobConsumer`) runs each message at most once against
Claude, however often SQS delivers it:

- the job record says `succeeded`: the message is a duplicate, delete it;
- otherwise the Claude call runs inside Powertools idempotency keyed by the job id, so a
  redelivery after a crash or a lost write replays the stored result instead of calling (and
  charging) again;
- upstream outages (overload, rate limit, open circuit, 5xx, timeout) re-schedule the job as a
  fresh, delayed copy of its message (delay from retry-after, growing), so waiting never spends
  the receives that catch poison messages; a job gives up only after JOB_MAX_AGE_SECONDS;
- permanent failures and malformed messages mark the job `failed` with the reason and let SQS
  move the message to the dead-letter queue.

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

from claudekit.settings import get_settings
from claudekit.store.jobs import JobStore, QueueInfo, public_view, queue_info, reset_clients, store_for
from claudekit.tasks.jobs.models import (
    BATCH_FEATURE,
    FEATURE,
    IN_CALL_RETRY_WAIT_SECONDS,
    MAX_ITEMS,
    MAX_SQS_PAYLOAD_BYTES,
    BatchPollMessage,
    ClassifyJob,
    GenerateJob,
    IdeasJob,
    JobItem,
    JobMessage,
    JobMode,
    JobOptions,
    JobsBody,
    JobStatus,
    JobTask,
    digest,
)
from claudekit.tasks.jobs.submit import Submitted, get_job, submit, submit_batch
from claudekit.tasks.jobs.worker import (
    ConcurrentBatchProcessor,
    JobConsumer,
    RecordReturned,
    get_consumer,
    reset_consumer,
)

__all__ = [
    "BATCH_FEATURE",
    "FEATURE",
    "IN_CALL_RETRY_WAIT_SECONDS",
    "MAX_ITEMS",
    "MAX_SQS_PAYLOAD_BYTES",
    "BatchPollMessage",
    "ClassifyJob",
    "ConcurrentBatchProcessor",
    "GenerateJob",
    "IdeasJob",
    "JobConsumer",
    "JobItem",
    "JobMessage",
    "JobMode",
    "JobOptions",
    "JobStatus",
    "JobStore",
    "JobTask",
    "JobsBody",
    "QueueInfo",
    "RecordReturned",
    "Submitted",
    "digest",
    "get_consumer",
    "get_job",
    "get_settings",
    "public_view",
    "queue_info",
    "reset_clients",
    "reset_consumer",
    "store_for",
    "submit",
    "submit_batch",
]
