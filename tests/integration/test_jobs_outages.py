"""Queued jobs wait out upstream outages: re-scheduled as fresh delayed messages (no poison-message
receive spent), failed only when permanent or older than the maximum age. SQS is moto's, run by
the local SQS event source; upstream calls are counted at the simulator by each job's text."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from claudekit.claude import secret
from claudekit.claude.client import reset_client
from claudekit.settings import get_settings
from claudekit.store.jobs import JobStore
from claudekit.tasks.jobs.worker import JobWorker
from local.aws import LocalAws
from local.simulator import Fault, Simulator
from local.sqs_source import SqsEventSource, build_event
from tests.integration.queues import set_env, wait_for
from tests.integration.test_jobs import (  # noqa: F401 (fixtures)
    context,
    get_job,
    jobs_env,
    post_jobs,
    receive,
    statuses,
    successful_calls,
)

# Short waits so an outage of a few seconds spans many of them; the queue's own visibility timeout
# is never what brings a job back.
WAITS = {
    "JOB_RETRY_BASE_SECONDS": "0.25",
    "JOB_RETRY_MAX_SECONDS": "1",
    "JOB_IN_PROGRESS_RETRY_SECONDS": "1",
    "JOB_MIN_START_SECONDS": "1",
    "WORKER_RECORD_CONCURRENCY": "4",
}


def dead_jobs(local_aws: LocalAws) -> set[str]:
    """Job ids in the dead-letter queue (peeked: the messages stay there)."""
    found: set[str] = set()
    for _ in range(3):
        messages = local_aws.client("sqs").receive_message(
            QueueUrl=local_aws.physical["JobsDeadLetterQueue"], MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        for message in messages.get("Messages", []):
            try:
                found.add(str(json.loads(message["Body"]).get("job_id")))
            except (ValueError, AttributeError):
                continue
    return found


@pytest.fixture
def outage_env(jobs_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    # A breaker that trips and half-opens quickly, so the outage also opens the circuit.
    set_env(monkeypatch, {"BREAKER_FAILURE_THRESHOLD": "5", "BREAKER_RECOVERY_SECONDS": "1", **WAITS})
    reset_client()
    yield
    reset_client()


@pytest.fixture
def source(local_aws: LocalAws, outage_env: None) -> Iterator[Callable[[JobWorker], SqsEventSource]]:
    started: list[SqsEventSource] = []

    def start(worker: JobWorker) -> SqsEventSource:
        source = SqsEventSource(
            worker.handle,
            local_aws.physical["JobsQueue"],
            local_aws.arns["JobsQueue"],
            endpoint_url=local_aws.endpoint,
            max_concurrency=2,
            function_timeout=30.0,
            wait_seconds=1,
        )
        started.append(source.start())
        return source

    yield start
    for running in started:
        running.stop()


def test_jobs_outlive_an_outage_longer_than_their_receives_and_succeed_once(
    sim: Simulator, local_aws: LocalAws, source: Callable[[JobWorker], SqsEventSource]
) -> None:
    sim.configure(fail_rate=1.0, fail_status=529)  # upstream down: every call overloaded
    texts = [f"Summarise during the outage {i}: {uuid.uuid4()}" for i in range(10)]
    status, body = post_jobs([{"task": "summarize", "input": text} for text in texts])
    assert status == 202
    job_ids = [j["id"] for j in body["jobs"]]

    source(JobWorker())
    # Down for longer than three of the waits (and than the queue's 3 receives would have allowed).
    time.sleep(5)
    assert set(statuses(job_ids).values()) <= {"queued", "running"}
    assert not dead_jobs(local_aws) & set(job_ids)
    sim.configure(fail_rate=0.0)  # back

    wait_for(lambda: set(statuses(job_ids).values()) == {"succeeded"}, timeout=40)

    assert [successful_calls(sim, text) for text in texts] == [1] * len(texts)  # exactly once each
    assert not dead_jobs(local_aws) & set(job_ids)
    _, job = get_job(job_ids[0])
    assert job["status"] == "succeeded" and job["result"]["text"]


def test_a_job_past_its_maximum_age_fails_with_the_reason(
    sim: Simulator, local_aws: LocalAws, outage_env: None
) -> None:
    worker = JobWorker()
    text = f"Generate something old. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "generate", "input": text}])
    job_id = body["jobs"][0]["id"]
    sim.script(*[Fault.status(529, match=text)] * 6)
    (message,) = receive(local_aws)
    max_age = get_settings().job_max_age_seconds
    aged = json.loads(message["Body"]) | {"attempts": 40, "first_seen": int(time.time() - max_age - 1)}
    message["Body"] = json.dumps(aged)

    worker.handle(build_event([message], local_aws.arns["JobsQueue"]), context())

    _, job = get_job(job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "UPSTREAM_UNAVAILABLE" and "gave up after 24 h" in job["error"]["message"]


def test_a_permanent_error_fails_the_job_at_once(sim: Simulator, local_aws: LocalAws, outage_env: None) -> None:
    worker = JobWorker()
    text = f"Extract from this. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "extract", "input": text}])
    job_id = body["jobs"][0]["id"]
    sim.script(Fault.status(400, match=text))
    messages = receive(local_aws)

    worker.handle(build_event(messages, local_aws.arns["JobsQueue"]), context())

    _, job = get_job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "UPSTREAM_ERROR"
    assert "arn:" not in json.dumps(job)


def test_an_internal_error_never_shows_or_stores_our_identifiers(
    sim: Simulator, local_aws: LocalAws, outage_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f"Summarise with a broken secret. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "summarize", "input": text}])
    job_id = body["jobs"][0]["id"]
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:claude-key-gone"
    monkeypatch.setenv("CLAUDE_SECRET_ID", missing)
    reset_client()

    secret.reset()
    worker = JobWorker()

    worker.handle(build_event(receive(local_aws), local_aws.arns["JobsQueue"]), context())

    _, job = get_job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "INTERNAL_ERROR"
    record = JobStore(get_settings().table_name).get(job_id)
    stored = json.dumps(job) + json.dumps(record, default=str)
    assert "123456789012" not in stored and "claude-key-gone" not in stored and "arn:" not in stored
    assert sim.message_requests() == []
