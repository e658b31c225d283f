"""What callers send, what travels on the queue, and what GET /jobs/{id} answers."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, model_validator

from claudekit.errors import (
    ClaudeError,
)
from claudekit.tasks.classify import ClassifyBody, ClassifyOut
from claudekit.tasks.generate import GenerateBody, GenerateOut, GenerateTask
from claudekit.tasks.ideas import IdeasBody, IdeasOut
from claudekit.tasks.models import Body, Text

JobStatus = Literal["queued", "running", "succeeded", "failed"]
JobMode = Literal["realtime", "batch"]

MAX_ITEMS = 100
# SQS limits one message and one SendMessageBatch call to 256 KiB (1 MiB since 2025, not everywhere).
MAX_SQS_PAYLOAD_BYTES = 256 * 1024
FEATURE = "jobs"
# The metrics dimension of jobs run through the Message Batches API (cost by feature shows the split).
BATCH_FEATURE = "batch"


# ---- what callers send and what they read back ------------------------------------------


class GenerateJob(Body):
    """A text task: its input is the prompt, or a whole /generate body (its `task`, if set, must match)."""

    task: GenerateTask
    input: Text | GenerateBody

    @model_validator(mode="after")
    def _same_task(self) -> GenerateJob:
        body = self.input
        if isinstance(body, GenerateBody) and "task" in body.model_fields_set and body.task != self.task:
            raise ValueError("input.task must be omitted or equal task")
        return self

    def body(self) -> GenerateBody:
        if isinstance(self.input, GenerateBody):
            return self.input.model_copy(update={"task": self.task})
        return GenerateBody(prompt=self.input, task=self.task)


class ClassifyJob(Body):
    """POST /classify as a job: `input` is exactly that route's body."""

    task: Literal["classify"]
    input: ClassifyBody


class IdeasJob(Body):
    """POST /ideas as a job: `input` is exactly that route's body."""

    task: Literal["ideas"]
    input: IdeasBody


# One item of POST /jobs, told apart by its task.
JobItem = Annotated[GenerateJob | ClassifyJob | IdeasJob, Field(discriminator="task")]
JobTask = Literal[GenerateTask, "classify", "ideas"]
JobInput = Text | GenerateBody | ClassifyBody | IdeasBody
_JOB_ITEM: TypeAdapter[GenerateJob | ClassifyJob | IdeasJob] = TypeAdapter(JobItem)


def job_item(task: str, value: Any) -> GenerateJob | ClassifyJob | IdeasJob:
    """The item a task and its input make, validated exactly as POST /jobs validates it."""
    data = value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value
    return _JOB_ITEM.validate_python({"task": task, "input": data})


def input_text(item: GenerateJob | ClassifyJob | IdeasJob) -> str:
    """The free text of an item, which MAX_INPUT_CHARS caps (as the route's own call would)."""
    if isinstance(item, GenerateJob):
        body = item.body()
        return body.prompt + (body.system or "")
    if isinstance(item, ClassifyJob):
        return item.input.text
    return item.input.topic


def message_input(item: GenerateJob | ClassifyJob | IdeasJob) -> str | GenerateBody | ClassifyBody | IdeasBody:
    """What the queue message carries: the input as sent, a generate body with its task made explicit."""
    if isinstance(item, GenerateJob) and isinstance(item.input, GenerateBody):
        return item.body()
    return item.input


def input_digest(value: str | BaseModel) -> str:
    """What the job record keeps of its input, to check the message against: never the input itself."""
    text = value if isinstance(value, str) else value.model_dump_json()
    return digest(text)


class JobsBody(Body):
    items: list[JobItem] = Field(min_length=1, max_length=MAX_ITEMS)
    # realtime: one SQS message per job, results in seconds to minutes, full price.
    # batch: one Message Batch for the whole list, results within 24 h, half price.
    mode: JobMode = "realtime"


class JobMessage(BaseModel):
    """The SQS message body: everything the worker needs, including the input itself."""

    model_config = ConfigDict(extra="forbid", strict=True)

    job_id: str = Field(min_length=1, max_length=64)
    user: str = Field(min_length=1)
    task: JobTask
    # Checked again here, as POST /jobs checks it: a message that did not come through submit never reaches Claude.
    input: JobInput
    # Times this message was re-sent because the job could not start (rate limit, deadline).
    deferrals: int = Field(0, ge=0)
    # Times the job was re-scheduled to wait out an upstream outage (each a fresh message, so the
    # queue's poison-message receives are kept for real poison), and when it was first queued
    # (epoch seconds): a job gives up only after JOB_MAX_AGE_SECONDS.
    attempts: int = Field(0, ge=0)
    first_seen: int | None = Field(None, ge=0)
    # The owner's Cognito groups when the jobs were posted: each job runs under the owner's plan
    # (the SQS worker has no token to read them from).
    groups: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=32
    )

    @model_validator(mode="after")
    def _valid_item(self) -> JobMessage:
        self.item()
        return self

    def item(self) -> GenerateJob | ClassifyJob | IdeasJob:
        return job_item(self.task, self.input)

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


# The longest retry-after a job sleeps through inside its call; a longer one re-schedules the job.
IN_CALL_RETRY_WAIT_SECONDS = 2.0


def now_iso(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat(timespec="milliseconds")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def is_job_id(value: str) -> bool:
    """Job ids are UUIDs: anything else is never looked up."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def error_of(exc: ClaudeError) -> dict[str, str]:
    return {"code": exc.code, "message": exc.message}


# ---- what POST /jobs and GET /jobs/{id} answer ------------------------------------------------


class JobRef(BaseModel):
    id: str
    status: JobStatus


class JobsOut(BaseModel):
    """POST /jobs: one entry per item, in order."""

    jobs: list[JobRef]


class JobError(BaseModel):
    code: str
    message: str


class JobView(BaseModel):
    """GET /jobs/{id}: `result` (the route's response shape) once succeeded, `error` once failed."""

    id: str
    task: JobTask
    status: JobStatus
    mode: JobMode
    result: GenerateOut | ClassifyOut | IdeasOut | None = None
    error: JobError | None = None
    created_at: str | None = None
    updated_at: str | None = None
