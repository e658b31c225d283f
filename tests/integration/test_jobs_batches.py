"""Jobs through the Message Batches API: POST /jobs {"mode": "batch"} -> one message batch at the
simulator (real HTTP through the SDK) -> poll messages on JobsQueue (moto) -> results on the jobs.

The HTTP functions get REST proxy events; poll messages are handed to the batch worker either
through the local SQS event source or one event at a time, so re-enqueued polls are visible.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from claudekit import errors
from claudekit.claude.client import get_client, reset_client
from claudekit.settings import get_settings
from claudekit.store.dynamo import from_ddb
from claudekit.store.jobs import JobStore
from claudekit.tasks.jobs import queue
from claudekit.tasks.jobs.worker import JobWorker, reset_worker
from local.aws import LocalAws
from local.simulator import Fault, Simulator
from local.sqs_source import FakeLambdaContext, SqsEventSource, build_event
from tests.integration.queues import drain, set_env, wait_for

ROOT = Path(__file__).resolve().parents[2]
BATCHES_PATH = "/v1/messages/batches"
# Polls come back at once in tests (deployed: BATCH_POLL_SECONDS, default 60).
FAST = {"JOB_MIN_START_SECONDS": "1", "WORKER_RECORD_CONCURRENCY": "4", "BATCH_POLL_SECONDS": "0"}
# claude-haiku-5-5 (summarize's tier) per million tokens (prompts up to 100,000 tokens), as prices.json ships it.
HAIKU_INPUT, HAIKU_OUTPUT = Decimal("0.1"), Decimal("0.5")


# ---- helpers ---------------------------------------------------------------------------------


def context(timeout: float = 30.0) -> FakeLambdaContext:
    return FakeLambdaContext(
        function_name="test",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:test",
        timeout_seconds=timeout,
    )


def rest_event(name: str, user: str, body: Any = None, job_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(json.loads((ROOT / "events" / name).read_text()))
    event["requestContext"]["authorizer"]["claims"]["sub"] = user
    event["requestContext"]["requestId"] = str(uuid.uuid4())
    if body is not None:
        event["body"] = json.dumps(body)
    if job_id is not None:
        event["path"] = f"/jobs/{job_id}"
        event["pathParameters"] = {"id": job_id}
    return event


def post_jobs(user: str, items: list[dict[str, Any]], **extra: Any) -> tuple[int, dict[str, Any]]:
    from functions.jobs import app

    response = app.handler(rest_event("jobs-post.json", user, body={"items": items, **extra}), context())
    return response["statusCode"], json.loads(response["body"])


def get_job(user: str, job_id: str) -> dict[str, Any]:
    from functions.jobs import app

    response = app.handler(rest_event("jobs-get.json", user, job_id=job_id), context())
    assert response["statusCode"] == 200
    return dict(json.loads(response["body"]))


def get_usage(user: str) -> dict[str, Any]:
    from functions.generate import app

    response = app.handler(rest_event("usage.json", user), context())
    assert response["statusCode"] == 200
    return dict(json.loads(response["body"]))


def batch_creates(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.method == "POST" and r.path == BATCHES_PATH)


def receive(local_aws: LocalAws, wait: int = 1) -> list[dict[str, Any]]:
    return list(
        local_aws.client("sqs")
        .receive_message(
            QueueUrl=local_aws.physical["JobsQueue"],
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            AttributeNames=["All"],
        )
        .get("Messages", [])
    )


def polls_of(local_aws: LocalAws, user: str, wait: int = 1) -> list[dict[str, Any]]:
    """This test's messages: one an earlier test left in flight may surface too, and is ignored."""
    return [m for m in receive(local_aws, wait) if json.loads(m["Body"]).get("user") == user]


def one_poll(local_aws: LocalAws, user: str) -> dict[str, Any]:
    (message,) = polls_of(local_aws, user)
    assert json.loads(message["Body"])["kind"] == "poll_batch"
    return message


def jobs_of(user: str) -> list[dict[str, Any]]:
    store = JobStore(get_settings().table_name)
    items = store.client.scan(TableName=store.table_name).get("Items", [])
    records = [from_ddb(i) for i in items if i["id"]["S"].startswith("job#")]
    return [r for r in records if r.get("owner") == user]


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def user() -> str:
    """A fresh owner per test, so usage and budgets start at zero."""
    return f"batch-user-{uuid.uuid4()}"


@pytest.fixture
def worker(settings_env: dict[str, str], local_aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobWorker]:
    set_env(monkeypatch, {"POWERTOOLS_TRACE_DISABLED": "true", **FAST})
    sqs = local_aws.client("sqs")
    for logical in ("JobsQueue", "JobsDeadLetterQueue"):
        drain(sqs, local_aws.physical[logical])
    reset_worker()
    yield JobWorker()
    reset_worker()


@pytest.fixture
def run_source(local_aws: LocalAws, worker: JobWorker) -> Iterator[Callable[[], SqsEventSource]]:
    started: list[SqsEventSource] = []

    def start() -> SqsEventSource:
        source = SqsEventSource(
            worker.handle,
            local_aws.physical["JobsQueue"],
            local_aws.arns["JobsQueue"],
            endpoint_url=local_aws.endpoint,
            max_concurrency=1,
            function_timeout=30.0,
            wait_seconds=1,
        )
        started.append(source.start())
        return source

    yield start
    for source in started:
        source.stop()


# ---- tests -----------------------------------------------------------------------------------


def test_a_batch_of_jobs_succeeds_at_half_the_realtime_price(
    sim: Simulator, user: str, run_source: Callable[[], SqsEventSource]
) -> None:
    sim.configure(reply_tokens=40)
    texts = [f"Summarise batch item {i}: {uuid.uuid4()}" for i in range(5)]

    status, body = post_jobs(user, [{"task": "summarize", "input": t} for t in texts], mode="batch")

    assert status == 202
    job_ids = [j["id"] for j in body["jobs"]]
    assert [j["status"] for j in body["jobs"]] == ["running"] * 5
    assert batch_creates(sim) == 1 and sim.message_requests() == []
    (create,) = [r for r in sim.requests if r.path == BATCHES_PATH]
    params = [req["params"] for req in create.body["requests"]]
    assert [req["custom_id"] for req in create.body["requests"]] == job_ids
    assert {p["model"] for p in params} == {"claude-haiku-5-5"} and {p["max_tokens"] for p in params} == {512}

    run_source()
    wait_for(lambda: all(get_job(user, j)["status"] == "succeeded" for j in job_ids))

    results = [get_job(user, j)["result"] for j in job_ids]
    for result in results:
        assert result["text"] and result["model"] == "claude-haiku-5-5"
        u = result["usage"]
        full = (u["input_tokens"] * HAIKU_INPUT + u["output_tokens"] * HAIKU_OUTPUT) / Decimal(1_000_000)
        assert result["cost_usd"] == float(full / 2)  # pinned: the Batches API is 50% off
    assert batch_creates(sim) == 1 and sim.message_requests() == []

    # The same input through the realtime queue: same usage, exactly twice the cost.
    status, realtime = post_jobs(user, [{"task": "summarize", "input": texts[0]}])
    assert status == 202
    rt_id = realtime["jobs"][0]["id"]
    wait_for(lambda: get_job(user, rt_id)["status"] == "succeeded")
    rt = get_job(user, rt_id)
    assert rt["mode"] == "realtime" and get_job(user, job_ids[0])["mode"] == "batch"
    assert rt["result"]["usage"] == results[0]["usage"]
    (sent,) = [r.body for r in sim.message_requests() if r.body["messages"][-1]["content"] == texts[0]]
    assert sent == params[0]  # the batch request is built exactly as the realtime call
    assert rt["result"]["cost_usd"] == 2 * results[0]["cost_usd"]

    usage = get_usage(user)
    assert usage["requests"] == 6
    assert usage["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in results) + rt["result"]["cost_usd"])
    # Every reservation was settled to the real cost: what remains is the budget minus the spend.
    assert usage["remaining"]["budget_usd"] == pytest.approx(usage["limits"]["daily_budget_usd"] - usage["cost_usd"])


class _RecordingSqs:
    """The real (moto) client, recording what every SendMessage sent and with which delay."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sent: list[tuple[int, str]] = []

    def send_message(self, **kwargs: Any) -> Any:
        self.sent.append((kwargs["DelaySeconds"], kwargs["MessageBody"]))
        return self.real.send_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def received(body: str) -> dict[str, Any]:
    """A message as ReceiveMessage would return it (this one is still delayed in the queue)."""
    md5 = hashlib.md5(body.encode()).hexdigest()
    return {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "r", "Body": body, "MD5OfBody": md5}


def test_batch_poll_seconds_in_the_environment_delays_every_poll(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, {"BATCH_POLL_SECONDS": "7"})
    sqs = _RecordingSqs(local_aws.client("sqs"))
    monkeypatch.setattr(queue, "sqs", lambda: sqs)
    sim.configure(batch_delay=3600)

    status, _ = post_jobs(user, [{"task": "summarize", "input": f"Slow {uuid.uuid4()}"}], mode="batch")

    assert status == 202
    ((delay, first),) = sqs.sent
    assert delay == 7 and json.loads(first)["kind"] == "poll_batch"
    assert polls_of(local_aws, user, wait=0) == []  # SQS holds it back for those seconds

    # Still running at the first look: the next poll waits as long.
    response = JobWorker().handle(build_event([received(first)], local_aws.arns["JobsQueue"]), context())

    assert response == {"batchItemFailures": []}
    assert [delay for delay, _ in sqs.sent] == [7, 7]
    assert json.loads(sqs.sent[1][1])["polls"] == 1


def test_polling_before_the_batch_ends_sends_the_poll_again(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker
) -> None:
    sim.configure(batch_delay=3600)
    status, body = post_jobs(
        user, [{"task": "extract", "input": f"Fields {i} {uuid.uuid4()}"} for i in range(3)], mode="batch"
    )
    assert status == 202
    job_ids = [j["id"] for j in body["jobs"]]
    first = one_poll(local_aws, user)

    response = worker.handle(build_event([first], local_aws.arns["JobsQueue"]), context())

    assert response == {"batchItemFailures": []}  # this poll is deleted ...
    second = one_poll(local_aws, user)  # ... because a fresh one was sent
    assert second["MessageId"] != first["MessageId"] and json.loads(second["Body"])["polls"] == 1
    assert {get_job(user, j)["status"] for j in job_ids} == {"running"}

    sim.advance(3600)
    response = worker.handle(build_event([second], local_aws.arns["JobsQueue"]), context())

    assert response == {"batchItemFailures": []}
    assert {get_job(user, j)["status"] for j in job_ids} == {"succeeded"}
    assert polls_of(local_aws, user, wait=0) == []  # collected: no further poll
    assert batch_creates(sim) == 1


def test_an_errored_request_fails_only_its_job(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker
) -> None:
    marker = f"refuse-{uuid.uuid4()}"
    sim.script(Fault.status(400, match=marker))
    items = [
        {"task": "summarize", "input": f"Fine one {uuid.uuid4()}"},
        {"task": "summarize", "input": f"Bad one {marker}"},
        {"task": "summarize", "input": f"Fine two {uuid.uuid4()}"},
    ]
    _, body = post_jobs(user, items, mode="batch")
    job_ids = [j["id"] for j in body["jobs"]]

    worker.handle(build_event([one_poll(local_aws, user)], local_aws.arns["JobsQueue"]), context())

    views = [get_job(user, j) for j in job_ids]
    assert [v["status"] for v in views] == ["succeeded", "failed", "succeeded"]
    assert views[1]["error"]["code"] == "UPSTREAM_ERROR" and marker not in json.dumps(views[1])
    usage = get_usage(user)
    assert usage["requests"] == 2  # the errored request cost nothing and its reservation is back
    assert usage["cost_usd"] == pytest.approx(views[0]["result"]["cost_usd"] + views[2]["result"]["cost_usd"])
    assert usage["remaining"]["budget_usd"] == pytest.approx(usage["limits"]["daily_budget_usd"] - usage["cost_usd"])


def test_a_batch_result_with_impossible_usage_fails_its_job_and_keeps_the_reservation(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker
) -> None:
    """Upstream says it answered (and billed) but its usage is impossible: that job fails with
    UPSTREAM_ERROR, its reservation stays charged for reconciliation, and the others succeed."""
    marker = f"bad-usage-{uuid.uuid4()}"
    sim.script(Fault.malformed(match=marker))
    items = [
        {"task": "summarize", "input": f"Fine one {uuid.uuid4()}"},
        {"task": "summarize", "input": f"Odd one {marker}"},
    ]
    _, body = post_jobs(user, items, mode="batch")
    job_ids = [j["id"] for j in body["jobs"]]
    reserved = get_usage(user)["remaining"]["budget_usd"]

    worker.handle(build_event([one_poll(local_aws, user)], local_aws.arns["JobsQueue"]), context())

    views = [get_job(user, j) for j in job_ids]
    assert [v["status"] for v in views] == ["succeeded", "failed"]
    assert views[1]["error"]["code"] == "UPSTREAM_ERROR"
    usage = get_usage(user)
    assert usage["requests"] == 1
    # The good job's reservation became its cost; the bad one's is still held, not given back.
    assert usage["remaining"]["budget_usd"] < usage["limits"]["daily_budget_usd"] - usage["cost_usd"]
    assert usage["remaining"]["budget_usd"] >= reserved


def test_a_poll_delivered_twice_charges_once(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, body = post_jobs(
        user, [{"task": "summarize", "input": f"Once {i} {uuid.uuid4()}"} for i in range(4)], mode="batch"
    )
    job_ids = [j["id"] for j in body["jobs"]]
    event = build_event([one_poll(local_aws, user)], local_aws.arns["JobsQueue"])

    responses = [worker.handle(event, context())]
    # A concurrent delivery read the jobs while they were still running: only the conditional
    # transition stands between it and a second charge. (Moto does not make concurrent
    # conditional writes atomic, as DynamoDB does, so the race is staged rather than run.)
    real_get = worker.store.get

    def stale_get(job_id: str) -> dict[str, Any] | None:
        record = real_get(job_id)
        return None if record is None else {**record, "status": "running"}

    monkeypatch.setattr(worker.store, "get", stale_get)
    responses.append(worker.handle(event, context()))
    monkeypatch.setattr(worker.store, "get", real_get)
    responses.append(worker.handle(event, context()))  # and a late, ordinary redelivery

    assert responses == [{"batchItemFailures": []}] * 3
    results = [get_job(user, j)["result"] for j in job_ids]
    usage = get_usage(user)
    assert usage["requests"] == 4
    assert usage["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in results))
    assert usage["remaining"]["budget_usd"] == pytest.approx(usage["limits"]["daily_budget_usd"] - usage["cost_usd"])
    assert batch_creates(sim) == 1
    # The guard that makes it so: a finished job's transition is lost by every later writer.
    store = JobStore(get_settings().table_name)
    batch_id = json.loads(event["Records"][0]["body"])["batch_id"]
    assert not store.finish_batch_job(job_ids[0], batch_id, error={"code": "INTERNAL_ERROR", "message": "late"})
    assert get_job(user, job_ids[0])["result"] == results[0]


def test_a_failed_batch_create_fails_every_job_and_charges_nothing(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker
) -> None:
    sim.script(Fault.status(529))

    status, body = post_jobs(user, [{"task": "generate", "input": f"Never {i}"} for i in range(3)], mode="batch")

    assert status == 503 and body["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert batch_creates(sim) == 1  # creating a batch is never retried: two could both run
    records = jobs_of(user)
    assert len(records) == 3
    assert {r["status"] for r in records} == {"failed"}
    assert {r["error"]["code"] for r in records} == {"UPSTREAM_UNAVAILABLE"}
    usage = get_usage(user)
    assert usage["cost_usd"] == 0 and usage["requests"] == 0
    assert usage["remaining"]["budget_usd"] == usage["limits"]["daily_budget_usd"]  # nothing still committed
    assert polls_of(local_aws, user, wait=0) == []  # no poll message


def test_a_batch_create_answered_with_something_else_fails_every_job(
    user: str, local_aws: LocalAws, worker: JobWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream that answers the create with a Message (valid JSON, wrong object) must not leave
    the jobs 'running' on an id no batch has: they fail at once and nothing stays charged."""
    message = {"id": "msg_x", "type": "message", "role": "assistant", "model": "m", "content": []}
    body = json.dumps({**message, "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}})

    class WrongObject(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), WrongObject)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    reset_client()
    try:
        status, reply = post_jobs(user, [{"task": "generate", "input": f"Odd {i}"} for i in range(2)], mode="batch")
    finally:
        server.shutdown()
        server.server_close()
        monkeypatch.undo()
        reset_client()

    assert status == 502 and reply["error"]["code"] == "UPSTREAM_ERROR"
    records = jobs_of(user)
    assert {r["status"] for r in records} == {"failed"} and len(records) == 2
    usage = get_usage(user)
    assert usage["remaining"]["budget_usd"] == usage["limits"]["daily_budget_usd"]  # nothing still committed
    assert polls_of(local_aws, user, wait=0) == []


def test_a_batch_over_the_budget_is_refused_before_anything_happens(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "0.01")
    from claudekit.claude.client import reset_client

    reset_client()
    # 30 reasoning jobs at the batch rate reserve far more than a cent: more than the whole budget,
    # so waiting cannot help (no Retry-After) and the message says what to lower.
    status, body = post_jobs(user, [{"task": "reason", "input": f"Why {i}?"} for i in range(30)], mode="batch")

    assert status == 422 and body["error"]["code"] == "COST_EXCEEDS_BUDGET"
    assert "lower the number or size of the items" in body["error"]["message"]
    assert jobs_of(user) == [] and batch_creates(sim) == 0
    assert get_client().ledger.report(user)["remaining"]["budget_usd"] == pytest.approx(0.01)


@pytest.mark.parametrize("mode", ["later", "BATCH", 1, None])
def test_unknown_modes_are_rejected(sim: Simulator, user: str, worker: JobWorker, mode: Any) -> None:
    status, body = post_jobs(user, [{"task": "summarize", "input": "x"}], mode=mode)

    assert status == 422 and body["error"]["code"] == "VALIDATION_ERROR"
    assert jobs_of(user) == [] and sim.requests == []


def test_a_canceled_batch_fails_its_jobs_and_gives_the_budget_back(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker
) -> None:
    sim.configure(batch_delay=3600)
    _, body = post_jobs(user, [{"task": "analyze", "input": f"Later {i}"} for i in range(2)], mode="batch")
    job_ids = [j["id"] for j in body["jobs"]]
    poll = one_poll(local_aws, user)
    sim.batches.cancel(json.loads(poll["Body"])["batch_id"])  # e.g. an operator canceled it in the console

    assert worker.handle(build_event([poll], local_aws.arns["JobsQueue"]), context()) == {"batchItemFailures": []}

    views = [get_job(user, j) for j in job_ids]
    assert {v["status"] for v in views} == {"failed"}
    assert {v["error"]["code"] for v in views} == {"UPSTREAM_ERROR"}
    assert "canceled" in views[0]["error"]["message"]
    usage = get_usage(user)
    assert usage["cost_usd"] == 0 and usage["remaining"]["budget_usd"] == usage["limits"]["daily_budget_usd"]
    assert polls_of(local_aws, user, wait=0) == []


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 429, "error_code": "enforced_spend_limit_reached"},
        {"status": 402},
    ],
    ids=["429-spend-limit", "402"],
)
def test_a_spend_limit_in_a_batch_result_is_a_spend_limit_as_in_realtime(
    sim: Simulator, user: str, local_aws: LocalAws, worker: JobWorker, fault: dict[str, Any]
) -> None:
    marker = f"spent-{uuid.uuid4()}"
    sim.script(Fault.status(fault["status"], error_code=fault.get("error_code"), match=marker))
    _, body = post_jobs(user, [{"task": "summarize", "input": f"Over the limit {marker}"}], mode="batch")
    (job_id,) = [j["id"] for j in body["jobs"]]

    worker.handle(build_event([one_poll(local_aws, user)], local_aws.arns["JobsQueue"]), context())

    view = get_job(user, job_id)
    expected = errors.SpendLimitReached()
    assert view["status"] == "failed"
    assert view["error"] == {"code": expected.code, "message": expected.message}
