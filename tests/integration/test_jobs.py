"""Batch jobs end to end in-process: POST /jobs -> SQS (moto) -> batch worker -> simulator -> GET.

The HTTP functions are invoked with REST proxy events; the batch function through the local
SQS event source (local.sqs_source), so receive counts, visibility timeouts and the DLQ are SQS's.
Upstream calls are counted at the simulator by each job's (unique) input text.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from claudekit.claude.client import get_client
from claudekit.settings import get_settings
from claudekit.store.jobs import JobStore
from claudekit.tasks.generate import GenerateOut
from claudekit.tasks.jobs import queue
from claudekit.tasks.jobs.models import JobMessage, JobsBody, digest
from claudekit.tasks.jobs.submit import submit
from claudekit.tasks.jobs.worker import JobWorker, reset_worker
from local.aws import LocalAws
from local.lambda_context import LambdaContext
from local.simulator import Fault, Latency, Simulator
from local.sqs_source import SqsEventSource, build_event
from tests.helpers import drain, set_env, wait_for

ROOT = Path(__file__).resolve().parents[2]
OWNER = "3f6c2a9e-8b1d-4e7a-9c55-2d0b6f1e4a87"
# The worker's settings in these tests: retries at once, records start with a second left, 8 at a time.
FAST = {
    "JOB_RETRY_BASE_SECONDS": "0",
    "JOB_IN_PROGRESS_RETRY_SECONDS": "1",
    "JOB_MIN_START_SECONDS": "1",
    "WORKER_RECORD_CONCURRENCY": "8",
}


# ---- helpers ---------------------------------------------------------------------------------


def context(timeout: float = 30.0) -> LambdaContext:
    return LambdaContext("test", timeout)


def rest_event(name: str, *, user: str = OWNER, body: Any = None, job_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(json.loads((ROOT / "events" / name).read_text()))
    event["requestContext"]["authorizer"]["claims"]["sub"] = user
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    if body is not None:
        event["body"] = json.dumps(body)
    if job_id is not None:
        event["path"] = f"/jobs/{job_id}"
        event["pathParameters"] = {"id": job_id}
    return event


def post_jobs(items: list[dict[str, Any]], user: str = OWNER) -> tuple[int, dict[str, Any]]:
    from functions.jobs import app

    response = app.handler(rest_event("jobs-post.json", user=user, body={"items": items}), context())
    return response["statusCode"], json.loads(response["body"])


def get_job(job_id: str, user: str = OWNER) -> tuple[int, dict[str, Any]]:
    from functions.jobs import app

    response = app.handler(rest_event("jobs-get.json", user=user, job_id=job_id), context())
    return response["statusCode"], json.loads(response["body"])


def prompt_of(request: Any) -> str:
    body = request.body if isinstance(request.body, dict) else {}
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content", "")
    return content if isinstance(content, str) else json.dumps(content)


def successful_calls(sim: Simulator, text: str) -> int:
    return sum(1 for r in sim.message_requests() if r.status == 200 and prompt_of(r) == text)


def calls(sim: Simulator, text: str) -> int:
    return sum(1 for r in sim.message_requests() if prompt_of(r) == text)


def statuses(job_ids: list[str]) -> dict[str, str]:
    store = JobStore(get_settings().table_name)
    return {job_id: str((store.get(job_id) or {}).get("status")) for job_id in job_ids}


def queue_depth(local_aws: LocalAws, logical: str) -> int:
    """Visible messages (tests that invoke the handler directly leave theirs in flight)."""
    attributes = local_aws.client("sqs").get_queue_attributes(
        QueueUrl=local_aws.physical[logical], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def receive_job(local_aws: LocalAws, job_id: str) -> dict[str, Any]:
    """The queue's message for this job; leftovers of earlier tests (delayed re-sends) are dropped."""
    sqs = local_aws.client("sqs")
    for _ in range(20):
        for message in receive(local_aws):
            if json.loads(message["Body"]).get("job_id") == job_id:
                return message
            sqs.delete_message(QueueUrl=local_aws.physical["JobsQueue"], ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError(f"no message for job {job_id}")


def receive(local_aws: LocalAws, count: int = 10, wait: int = 1) -> list[dict[str, Any]]:
    return list(
        local_aws.client("sqs")
        .receive_message(
            QueueUrl=local_aws.physical["JobsQueue"],
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        .get("Messages", [])
    )


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def jobs_env(settings_env: dict[str, str], local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    set_env(monkeypatch, {"POWERTOOLS_TRACE_DISABLED": "true", **FAST})
    sqs = local_aws.client("sqs")
    for logical in ("JobsQueue", "JobsDeadLetterQueue"):
        drain(sqs, local_aws.physical[logical])
    reset_worker()
    yield
    reset_worker()


@pytest.fixture
def worker(jobs_env: None) -> JobWorker:
    return JobWorker()


@pytest.fixture
def run_source(local_aws: LocalAws, worker: JobWorker) -> Iterator[Callable[..., SqsEventSource]]:
    started: list[SqsEventSource] = []

    def start(**kw: Any) -> SqsEventSource:
        source = SqsEventSource(
            worker.handle,
            local_aws.physical["JobsQueue"],
            local_aws.arns["JobsQueue"],
            endpoint_url=local_aws.endpoint,
            **{"max_concurrency": 2, "function_timeout": 30.0, "wait_seconds": 1, **kw},
        )
        started.append(source.start())
        return source

    yield start
    for source in started:
        source.stop()


# ---- (a) 100 jobs through transient upstream failures ----------------------------------------


def test_hundred_jobs_with_transient_failures_all_succeed_once(
    sim: Simulator, run_source: Callable[..., SqsEventSource]
) -> None:
    sim.configure(fail_rate=0.2, fail_status=529, seed=1)
    inputs = [f"Summarise item {i}: {uuid.uuid4()}" for i in range(100)]
    status, body = post_jobs([{"task": "summarize", "input": text} for text in inputs])
    assert status == 202
    job_ids = [j["id"] for j in body["jobs"]]
    assert len(job_ids) == 100 and all(j["status"] == "queued" for j in body["jobs"])

    run_source()
    wait_for(lambda: set(statuses(job_ids).values()) == {"succeeded"}, timeout=45)

    failed = [r for r in sim.message_requests() if r.status == 529]
    assert failed, "the simulator should have failed some requests"
    assert [successful_calls(sim, text) for text in inputs] == [1] * 100
    code, job = get_job(job_ids[0])
    assert code == 200 and job["status"] == "succeeded"
    assert set(job["result"]) == set(GenerateOut.model_fields)  # the route's shape
    assert job["result"]["text"] and job["result"]["cost_usd"] > 0


# ---- (b) poison messages reach the DLQ, their jobs read failed -------------------------------


def test_poison_messages_reach_the_dlq_and_jobs_read_failed(
    sim: Simulator, local_aws: LocalAws, run_source: Callable[..., SqsEventSource]
) -> None:
    doomed = f"Extract the fields. marker-{uuid.uuid4()}"
    sim.script(Fault.status(400, match=doomed))
    status, body = post_jobs([{"task": "extract", "input": doomed}])
    assert status == 202
    job_id = body["jobs"][0]["id"]
    local_aws.client("sqs").send_message(QueueUrl=local_aws.physical["JobsQueue"], MessageBody="not json {")

    run_source()
    wait_for(lambda: queue_depth(local_aws, "JobsDeadLetterQueue") == 2, timeout=20)

    dead = local_aws.client("sqs").receive_message(
        QueueUrl=local_aws.physical["JobsDeadLetterQueue"], MaxNumberOfMessages=10, WaitTimeSeconds=1
    )["Messages"]
    bodies = sorted(m["Body"] for m in dead)
    assert "not json {" in bodies
    assert any(json.loads(b)["job_id"] == job_id for b in bodies if b.startswith("{"))
    code, job = get_job(job_id)
    assert code == 200 and job["status"] == "failed"
    assert job["error"]["code"] == "UPSTREAM_ERROR" and job["error"]["message"]
    assert calls(sim, doomed) == 1  # a permanent failure is never retried, not even on redelivery
    assert queue_depth(local_aws, "JobsQueue") == 0


def test_an_outage_on_the_last_receive_re_schedules_instead_of_failing(
    sim: Simulator, local_aws: LocalAws, worker: JobWorker
) -> None:
    text = f"Reason about this. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "reason", "input": text}])
    job_id = body["jobs"][0]["id"]
    sim.script(*[Fault.status(529, match=text)] * 6)  # every attempt and the fallback fail
    messages = receive(local_aws)
    messages[0]["Attributes"]["ApproximateReceiveCount"] = "3"  # JobsMaxReceiveCount

    response = worker.handle(build_event(messages, local_aws.arns["JobsQueue"]), context())

    # The original is deleted (no item failure) and a fresh copy waits: no receive was spent.
    assert response == {"batchItemFailures": []}
    _, job = get_job(job_id)
    assert job["status"] == "queued"
    (again,) = receive(local_aws, wait=2)
    assert again["Attributes"]["ApproximateReceiveCount"] == "1"
    resent = json.loads(again["Body"])
    assert resent["job_id"] == job_id and resent["attempts"] == 1 and resent["first_seen"] > 0

    assert worker.handle(build_event([again], local_aws.arns["JobsQueue"]), context()) == {"batchItemFailures": []}
    assert statuses([job_id])[job_id] == "succeeded" and successful_calls(sim, text) == 1


# ---- (c) idempotency -------------------------------------------------------------------------


def test_a_message_delivered_twice_calls_upstream_once(
    sim: Simulator, local_aws: LocalAws, run_source: Callable[..., SqsEventSource]
) -> None:
    text = f"Generate a title. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "generate", "input": text}])
    job_id = body["jobs"][0]["id"]
    # SQS delivers at least once: put a second copy of the same message in the queue.
    (message,) = receive(local_aws)
    local_aws.client("sqs").send_message(QueueUrl=local_aws.physical["JobsQueue"], MessageBody=message["Body"])
    local_aws.client("sqs").change_message_visibility(
        QueueUrl=local_aws.physical["JobsQueue"], ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )

    run_source()
    wait_for(lambda: statuses([job_id])[job_id] == "succeeded")
    wait_for(lambda: queue_depth(local_aws, "JobsQueue") == 0)

    assert calls(sim, text) == 1
    assert get_client().ledger.report(OWNER)["requests"] >= 1


def set_running(job_id: str, lease_until: float) -> None:
    """What a crash after the Claude call, before the result write, leaves: the job running, leased
    to the crashed delivery until its invocation's time is over, and no result."""
    store = JobStore(get_settings().table_name)
    store.client.update_item(
        TableName=store.table_name,
        Key={"id": {"S": f"job#{job_id}"}},
        UpdateExpression="SET #s = :r, lease_until = :l REMOVE #res",
        ExpressionAttributeNames={"#s": "status", "#res": "result"},
        ExpressionAttributeValues={":r": {"S": "running"}, ":l": {"N": str(int(lease_until))}},
    )


def test_a_crash_before_the_result_write_holds_the_job_until_the_crashed_invocation_is_over(
    sim: Simulator, local_aws: LocalAws, worker: JobWorker
) -> None:
    user = f"user-{uuid.uuid4()}"
    text = f"Summarise once. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "summarize", "input": text}], user=user)
    job_id = body["jobs"][0]["id"]
    messages = receive(local_aws)
    event = build_event(messages, local_aws.arns["JobsQueue"])
    assert worker.handle(event, context()) == {"batchItemFailures": []}
    charged = get_client().ledger.report(user)
    set_running(job_id, time.time() + 60)

    # While the crashed invocation could still be running, a redelivery neither calls nor charges.
    response = worker.handle(event, context())

    assert response == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert calls(sim, text) == 1
    assert get_job(job_id, user)[1]["status"] == "running"
    assert get_client().ledger.report(user)["requests"] == charged["requests"] == 1

    # Once its time is over the job is run again (as Powertools' in-progress record allowed):
    # there is no second record that could hold a result the job record lacks.
    set_running(job_id, time.time() - 10)
    assert worker.handle(event, context()) == {"batchItemFailures": []}
    assert calls(sim, text) == 2
    assert get_job(job_id, user)[1]["status"] == "succeeded"


# The job's own DynamoDB call: the claim (one conditional update). Its result and status (with the
# owner's in-flight count) ride in the settlement's transaction; the admission is the client's.
# No read of the job record, no idempotency record, no transaction of the job's own.
JOB_RECORD_CALLS = {"dynamodb.UpdateItem [job#]": 1, "dynamodb.TransactWriteItems [usage#]": 1}
DYNAMODB_CALLS_PER_JOB = 3  # + the clock-driven refreshes (breaker, cooldown): counted apart


def test_a_job_costs_three_dynamodb_calls_and_no_read_of_its_record(
    sim: Simulator, local_aws: LocalAws, worker: JobWorker
) -> None:
    from benchmarks.awscalls import AwsCalls

    count = 10
    post_jobs([{"task": "summarize", "input": f"Counted {i}. {uuid.uuid4()}"} for i in range(count)])
    messages: list[dict[str, Any]] = []
    wait_for(lambda: bool(messages.extend(receive(local_aws)) or len(messages) == count), timeout=10)
    event = build_event(messages, local_aws.arns["JobsQueue"])
    with AwsCalls() as counter:
        assert worker.handle(event, context()) == {"batchItemFailures": []}
        seen = counter.take()

    by_name = AwsCalls.counts(seen)
    for name, per_job in JOB_RECORD_CALLS.items():
        assert by_name[name] == per_job * count, by_name
    assert not [c for c in seen if c.item in ("job#", "idem#") and c.operation == "GetItem"], by_name
    assert not [c for c in seen if c.item == "idem#"], by_name
    assert "dynamodb.TransactWriteItems [job#]" not in by_name, by_name
    # The breaker's state and the cooldowns are read together (BatchGetItem) when their cache expires.
    dynamodb = [c for c in seen if c.service == "dynamodb" and not c.is_refresh and c.operation != "BatchGetItem"]
    assert len(dynamodb) <= DYNAMODB_CALLS_PER_JOB * count, by_name


@pytest.mark.parametrize(
    ("forge", "status"),
    [
        (lambda m: {**m, "user": f"mallory-{uuid.uuid4()}"}, "queued"),  # another user's job: untouched
        (lambda m: {**m, "input": m["input"] + " and more"}, "failed"),  # not the job's input
        (lambda m: {**m, "job_id": str(uuid.uuid4())}, None),  # no such job
    ],
    ids=["owner", "input", "unknown"],
)
def test_a_message_that_does_not_match_its_job_never_runs(
    sim: Simulator, local_aws: LocalAws, worker: JobWorker, forge: Callable[[dict[str, Any]], Any], status: str | None
) -> None:
    text = f"Summarise the original. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "summarize", "input": text}])
    job_id = body["jobs"][0]["id"]
    original = receive_job(local_aws, job_id)
    sqs = local_aws.client("sqs")
    sqs.delete_message(QueueUrl=local_aws.physical["JobsQueue"], ReceiptHandle=original["ReceiptHandle"])
    forged_body = forge(json.loads(original["Body"]))
    sqs.send_message(QueueUrl=local_aws.physical["JobsQueue"], MessageBody=json.dumps(forged_body))
    forged = receive_job(local_aws, forged_body["job_id"])

    response = worker.handle(build_event([forged], local_aws.arns["JobsQueue"]), context())

    # Reported failed at once, on its way to the dead-letter queue, without an upstream call.
    assert response == {"batchItemFailures": [{"itemIdentifier": forged["MessageId"]}]}
    assert [r for r in sim.message_requests() if text in prompt_of(r)] == []
    if status is not None:
        assert statuses([job_id])[job_id] == status


# ---- (d) partial batch failures --------------------------------------------------------------


def test_one_bad_record_is_the_only_batch_item_failure(sim: Simulator, local_aws: LocalAws, jobs_env: None) -> None:
    from functions.worker import app as worker_app

    texts = [f"Analyse {i}. {uuid.uuid4()}" for i in range(2)]
    _, body = post_jobs([{"task": "analyze", "input": t} for t in texts])
    local_aws.client("sqs").send_message(QueueUrl=local_aws.physical["JobsQueue"], MessageBody='{"job_id": 1}')
    ours = [j["id"] for j in body["jobs"]]
    messages: list[dict[str, Any]] = []

    def received() -> bool:  # this test's three: a message an earlier test left may surface too
        bodies = ('{"job_id": 1}', *ours)
        messages.extend(m for m in receive(local_aws) if any(b in m["Body"] for b in bodies))
        return len(messages) == 3

    assert wait_for(received, timeout=10)
    bad = next(m["MessageId"] for m in messages if m["Body"] == '{"job_id": 1}')

    response = worker_app.handler(build_event(messages, local_aws.arns["JobsQueue"]), context())

    assert response == {"batchItemFailures": [{"itemIdentifier": bad}]}
    assert set(statuses(ours).values()) == {"succeeded"}


def test_retry_after_sets_the_delay_of_the_re_scheduled_job(
    sim: Simulator, local_aws: LocalAws, jobs_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("MODEL_FALLBACK", "")
    from claudekit.claude.client import reset_client

    reset_client()
    worker = JobWorker()
    text = f"Generate later. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "generate", "input": text}])
    job_id = body["jobs"][0]["id"]
    sim.script(Fault.status(529, retry_after=2, match=text))
    messages = receive(local_aws)

    response = worker.handle(build_event(messages, local_aws.arns["JobsQueue"]), context())

    assert response == {"batchItemFailures": []}
    assert statuses([job_id])[job_id] == "queued"
    assert receive(local_aws, wait=0) == []  # delayed for retry-after
    time.sleep(2.2)
    (again,) = receive(local_aws)
    assert again["Attributes"]["ApproximateReceiveCount"] == "1"
    local_aws.client("sqs").delete_message(
        QueueUrl=local_aws.physical["JobsQueue"], ReceiptHandle=again["ReceiptHandle"]
    )


def test_a_long_retry_after_waits_in_the_queue_not_in_lambda(
    sim: Simulator, local_aws: LocalAws, jobs_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_FALLBACK", "")  # retries on, three attempts by default
    from claudekit.claude.client import reset_client

    reset_client()
    worker = JobWorker()
    text = f"Generate much later. {uuid.uuid4()}"
    _, body = post_jobs([{"task": "generate", "input": text}])
    sim.script(Fault.status(429, retry_after=4, match=text))  # longer than a job sleeps in a call
    messages = receive(local_aws)

    response = worker.handle(build_event(messages, local_aws.arns["JobsQueue"]), context())

    assert response == {"batchItemFailures": []}
    assert len([r for r in sim.message_requests() if text in str(r.body)]) == 1  # not retried in the call
    assert receive(local_aws, wait=0) == []  # the fresh copy waits in the queue instead
    assert statuses([body["jobs"][0]["id"]])[body["jobs"][0]["id"]] == "queued"
    time.sleep(4.2)
    (again,) = receive(local_aws)
    local_aws.client("sqs").delete_message(
        QueueUrl=local_aws.physical["JobsQueue"], ReceiptHandle=again["ReceiptHandle"]
    )


def test_records_not_started_near_the_deadline_go_back_untouched(
    sim: Simulator, local_aws: LocalAws, worker: JobWorker
) -> None:
    _, body = post_jobs([{"task": "summarize", "input": f"Late {i}. {uuid.uuid4()}"} for i in range(3)])
    messages: list[dict[str, Any]] = []
    wait_for(lambda: bool(messages.extend(receive(local_aws)) or len(messages) == 3), timeout=10)

    response = worker.handle(build_event(messages, local_aws.arns["JobsQueue"]), context(timeout=0.5))

    assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == {m["MessageId"] for m in messages}
    assert sim.message_requests() == []
    assert set(statuses([j["id"] for j in body["jobs"]]).values()) == {"queued"}


def test_records_of_one_event_run_concurrently(
    sim: Simulator, local_aws: LocalAws, jobs_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, {"WORKER_RECORD_CONCURRENCY": "10"})
    worker = JobWorker()

    def one_batch() -> tuple[dict[str, Any], float]:
        post_jobs([{"task": "summarize", "input": f"Parallel {i}. {uuid.uuid4()}"} for i in range(10)])
        messages: list[dict[str, Any]] = []
        wait_for(lambda: bool(messages.extend(receive(local_aws)) or len(messages) == 10), timeout=10)
        started = time.monotonic()
        response = worker.handle(build_event(messages, local_aws.arns["JobsQueue"]), context())
        return response, time.monotonic() - started

    one_batch()  # warm up: the pool's threads build their AWS clients once per container
    sim.configure(latency=Latency(ttft=0.5, tokens_per_second=0))
    before = len(sim.message_requests())
    response, _ = one_batch()

    assert response == {"batchItemFailures": []}
    # Observed at the simulator, not timed: how many upstream calls were in flight at once.
    calls = [(r.time, r.time + (r.duration or 0)) for r in sim.message_requests()[before:]]
    in_flight = max(sum(1 for start, end in calls if start <= at < end) for at, _ in calls)
    assert len(calls) == 10
    assert in_flight >= 2  # sequential processing would never overlap


# ---- (e) the HTTP contract -------------------------------------------------------------------


def job_items() -> set[str]:
    store = JobStore(get_settings().table_name)
    items = store.client.scan(TableName=store.table_name, ProjectionExpression="id").get("Items", [])
    return {i["id"]["S"] for i in items if i["id"]["S"].startswith("job#")}


@pytest.mark.parametrize(
    "bad",
    [
        {"task": "summarize", "input": ""},
        {"task": "summarize", "input": "   "},
        {"task": "translate", "input": "hola"},
        {"task": "summarize", "input": "x", "priority": 1},
        {"task": "summarize"},
    ],
)
def test_one_bad_item_rejects_the_whole_list(local_aws: LocalAws, jobs_env: None, bad: dict[str, Any]) -> None:
    before = job_items()
    status, body = post_jobs([{"task": "summarize", "input": "fine"}, bad])
    assert status == 422 and body["error"]["code"] == "VALIDATION_ERROR"
    assert job_items() == before
    assert queue_depth(local_aws, "JobsQueue") == 0


@pytest.mark.parametrize("count", [0, 101])
def test_item_count_is_bounded(jobs_env: None, count: int) -> None:
    status, body = post_jobs([{"task": "summarize", "input": "x"}] * count)
    assert status == 422 and body["error"]["code"] == "VALIDATION_ERROR"


def test_an_input_over_the_limit_is_413_and_nothing_is_recorded(
    local_aws: LocalAws, jobs_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_INPUT_CHARS", "50")
    get_settings.cache_clear()
    before = job_items()
    status, body = post_jobs([{"task": "summarize", "input": "short"}, {"task": "summarize", "input": "x" * 51}])
    assert status == 413 and body["error"]["code"] == "INPUT_TOO_LARGE"
    assert job_items() == before and queue_depth(local_aws, "JobsQueue") == 0
    get_settings.cache_clear()


def test_another_users_job_is_indistinguishable_from_an_unknown_one(jobs_env: None) -> None:
    _, body = post_jobs([{"task": "summarize", "input": "mine"}])
    job_id = body["jobs"][0]["id"]

    mine = get_job(job_id)
    theirs = get_job(job_id, user="someone-else")
    unknown = get_job(str(uuid.uuid4()), user="someone-else")
    garbage = get_job("not-a-uuid")

    assert mine[0] == 200 and mine[1]["status"] == "queued" and mine[1]["task"] == "summarize"
    assert "input" not in mine[1]
    for status, error in (theirs, unknown, garbage):
        assert status == 404
        assert {k: v for k, v in error["error"].items() if k != "request_id"} == {
            "code": "NOT_FOUND",
            "message": "no such job",
        }


def test_the_job_record_holds_a_digest_not_the_input(jobs_env: None) -> None:
    text = f"Private text {uuid.uuid4()}"
    _, body = post_jobs([{"task": "summarize", "input": text}])
    record = JobStore(get_settings().table_name).get(body["jobs"][0]["id"])
    assert record is not None
    assert text not in json.dumps(record, default=str)
    assert record["input_sha256"] == digest(text) and record["owner"] == OWNER


class _FlakySqs:
    """SendMessageBatch that reports the entry carrying `refuse` as failed (SQS's fault) in its
    first `rounds` calls that carry it (all of them by default)."""

    def __init__(self, real: Any, refuse: str, rounds: int = 1_000) -> None:
        self.real, self.refuse, self.rounds = real, refuse, rounds

    def send_message_batch(self, **kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        refusing = self.rounds > 0 and any(self.refuse in e["MessageBody"] for e in entries)
        self.rounds -= refusing
        keep = [e for e in entries if not refusing or self.refuse not in e["MessageBody"]]
        refused = [e for e in entries if e not in keep]
        response = self.real.send_message_batch(QueueUrl=kwargs["QueueUrl"], Entries=keep) if keep else {}
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in refused]
        return {"Successful": response.get("Successful", []), "Failed": failed}


def test_a_message_that_cannot_be_sent_leaves_a_failed_job_not_a_queued_one(
    local_aws: LocalAws, jobs_env: None
) -> None:
    items = JobsBody.model_validate(
        {"items": [{"task": "summarize", "input": f"item {i} {'REFUSE' if i == 11 else ''}"} for i in range(15)]}
    )
    waits: list[float] = []
    submitted = submit(items, OWNER, sqs=_FlakySqs(local_aws.client("sqs"), "REFUSE"), sleep=waits.append)

    assert waits == [0.1, 0.2]  # three rounds for the refused entry, then it is given up
    by_status = [s.status for s in submitted]
    assert by_status.count("failed") == 1 and by_status[11] == "failed"
    assert statuses([s.job_id for s in submitted])[submitted[11].job_id] == "failed"
    assert queue_depth(local_aws, "JobsQueue") == 14
    _, job = get_job(submitted[11].job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "INTERNAL_ERROR"


def test_an_entry_sqs_refused_is_sent_again_after_a_growing_wait(local_aws: LocalAws, jobs_env: None) -> None:
    texts = [f"again {i} {uuid.uuid4()}" for i in range(3)]
    items = JobsBody.model_validate({"items": [{"task": "summarize", "input": text} for text in texts]})
    waits: list[float] = []

    submitted = submit(items, OWNER, sqs=_FlakySqs(local_aws.client("sqs"), texts[1], rounds=2), sleep=waits.append)

    assert waits == [0.1, 0.2]
    assert [s.status for s in submitted] == ["queued"] * 3
    sent = [json.loads(m["Body"])["job_id"] for m in receive(local_aws)]
    assert sorted(sent) == sorted(s.job_id for s in submitted)  # each exactly once


class _FailingSqs(BaseHTTPRequestHandler):
    """An SQS endpoint that answers every call with a 500 (which botocore retries), counting them."""

    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        type(self).calls += 1
        body = json.dumps({"__type": "InternalError", "message": "down"}).encode()
        self.send_response(500)
        self.send_header("content-type", "application/x-amz-json-1.0")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_sqs_calls_are_retried_by_botocore_alone(jobs_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's standard mode makes three attempts per call; nothing of ours retries on top."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingSqs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    queue.reset()
    url = get_settings().jobs_queue_url
    assert url
    message = JobMessage(job_id=str(uuid.uuid4()), user=OWNER, task="summarize", input="x")
    try:
        sent = queue.send(queue.sqs(), url, message.to_json(), 0)
        single = _FailingSqs.calls
        unsent = queue.send_all(queue.sqs(), url, [message], sleep=lambda _: None)
    finally:
        server.shutdown()
        server.server_close()
        queue.reset()

    assert not sent and single == 3
    assert unsent == {message.job_id} and _FailingSqs.calls == 6


def test_jobs_run_under_the_plan_of_the_groups_they_were_posted_with(
    sim: Simulator, local_aws: LocalAws, jobs_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SQS worker has no token: each job carries its owner's groups, so a free user's jobs
    count against the free plan's minute, not the default plan's."""
    from claudekit.claude.client import reset_client
    from functions.jobs import app

    monkeypatch.setenv("PLANS", json.dumps({"free": {"requests_per_minute": 2, "daily_budget_usd": 1}}))
    reset_client()
    user = f"free-{uuid.uuid4()}"
    event = rest_event(
        "jobs-post.json", user=user, body={"items": [{"task": "summarize", "input": f"Free {i}"} for i in range(3)]}
    )
    event["requestContext"]["authorizer"]["claims"]["cognito:groups"] = "free"
    try:
        response = app.handler(event, context())
        assert response["statusCode"] == 202, response["body"]
        job_ids = [j["id"] for j in json.loads(response["body"])["jobs"]]
        messages = receive(local_aws)
        assert len(messages) == 3 and all(json.loads(m["Body"])["groups"] == ["free"] for m in messages)

        JobWorker().handle(build_event(messages, local_aws.arns["JobsQueue"]), context())

        # POST /jobs took one of the plan's two requests this minute: one job runs, two wait.
        assert sorted(statuses(job_ids).values()) == ["queued", "queued", "succeeded"]
        assert len(sim.message_requests()) == 1
    finally:
        monkeypatch.undo()
        reset_client()


def test_a_queue_read_that_failed_is_read_again(local_aws: LocalAws) -> None:
    """The redrive policy says which receive is a job's last: a failed read must not stand for the
    container's life (every message would then be dropped instead of reaching the DLQ)."""
    import boto3
    from botocore.config import Config

    from claudekit.store.jobs import queue_info, reset_clients

    url = local_aws.physical["JobsQueue"]
    reset_clients()
    dead = boto3.client(
        "sqs", endpoint_url="http://127.0.0.1:9", region_name="us-east-1", config=Config(retries={"max_attempts": 1})
    )
    assert queue_info(url, dead).max_receive_count is None
    expected = int(local_aws.parameters["JobsMaxReceiveCount"])
    assert queue_info(url, local_aws.client("sqs")).max_receive_count == expected
    reset_clients()
