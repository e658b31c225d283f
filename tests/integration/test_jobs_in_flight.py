"""The shared queue is shared fairly: each user's jobs in flight (queued or running) are capped by
MAX_JOBS_IN_FLIGHT, exactly under concurrency, and a job that ends (succeeded, failed, failed on
its way to the DLQ) leaves the count. POST /jobs also counts against the per-minute rate limit.

POST /jobs runs through the jobs function's handler; jobs run through the local SQS event source.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from claudekit.claude.client import get_client, reset_client
from claudekit.settings import get_settings
from claudekit.store.jobs import JobStore
from local.aws import LocalAws
from local.simulator import Fault, Simulator
from local.sqs_source import SqsEventSource
from tests.helpers import wait_for
from tests.integration.test_jobs import (  # noqa: F401 (fixtures used by name)
    jobs_env,
    post_jobs,
    run_source,
    statuses,
    worker,
)

CAP = 3


@pytest.fixture
def capped(jobs_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # noqa: F811
    monkeypatch.setenv("MAX_JOBS_IN_FLIGHT", str(CAP))
    reset_client()
    yield
    reset_client()


def in_flight(user: str) -> int:
    return JobStore(get_settings().table_name).in_flight(user)


def items(count: int, task: str = "summarize") -> list[dict[str, str]]:
    return [{"task": task, "input": f"Summarise note {uuid.uuid4()}"} for _ in range(count)]


def test_a_submission_past_the_cap_is_refused_whole_and_another_user_is_unaffected(capped: None) -> None:
    alice, bob = f"alice-{uuid.uuid4()}", f"bob-{uuid.uuid4()}"
    status, body = post_jobs(items(2), user=alice)
    assert status == 202 and in_flight(alice) == 2

    status, body = post_jobs(items(2), user=alice)  # 2 + 2 > 3: none of the two is recorded

    assert status == 429, body
    assert body["error"]["code"] == "RATE_LIMITED"
    assert "in flight" in body["error"]["message"]
    assert in_flight(alice) == 2
    status, _ = post_jobs(items(1), user=alice)  # exactly up to the cap still fits
    assert status == 202 and in_flight(alice) == CAP
    status, body = post_jobs(items(CAP), user=bob)
    assert status == 202 and len(body["jobs"]) == CAP


@pytest.mark.parametrize("count", [99, 100])  # one transaction with the count; the full 100 counts first
def test_a_large_submission_past_the_cap_writes_nothing(jobs_env: None, count: int) -> None:  # noqa: F811
    store, user = JobStore(get_settings().table_name), f"u-{uuid.uuid4()}"
    records = [{"id": f"job#{uuid.uuid4()}", "owner": user, "status": "queued"} for _ in range(count + 1)]
    assert store.create(records[:1], owner=user, cap=count)
    assert not store.create(records[1:], owner=user, cap=count)
    assert in_flight(user) == 1
    assert store.get(records[1]["id"].removeprefix("job#")) is None
    assert store.create(records[1:count], owner=user, cap=count) and in_flight(user) == count


def test_the_refusal_says_when_to_retry(capped: None) -> None:
    from functions.jobs import app
    from tests.integration.test_jobs import context, rest_event

    user = f"flood-{uuid.uuid4()}"
    assert post_jobs(items(CAP), user=user)[0] == 202
    response = app.handler(rest_event("jobs-post.json", user=user, body={"items": items(1)}), context())
    assert response["statusCode"] == 429
    headers = {**response.get("headers", {}), **{k: v[0] for k, v in response.get("multiValueHeaders", {}).items()}}
    assert int(headers["Retry-After"]) > 0


def test_a_submission_larger_than_the_cap_itself_is_422_for_good(capped: None) -> None:
    """Waiting can never make it fit: no Retry-After, nothing recorded, no request counted."""
    from functions.jobs import app
    from tests.integration.test_jobs import context, rest_event

    user = f"huge-{uuid.uuid4()}"
    response = app.handler(rest_event("jobs-post.json", user=user, body={"items": items(CAP + 1)}), context())
    assert response["statusCode"] == 422, response["body"]
    assert "submit fewer" in response["body"]
    headers = {**response.get("headers", {}), **{k: v[0] for k, v in response.get("multiValueHeaders", {}).items()}}
    assert "Retry-After" not in headers
    assert in_flight(user) == 0
    assert get_client().ledger.report(user)["requests"] == 0


def test_the_count_is_exact_under_concurrent_submissions(capped: None) -> None:
    user = f"racer-{uuid.uuid4()}"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post_jobs(items(1), user=user)[0], range(8)))
    assert sorted(results) == [202] * CAP + [429] * (8 - CAP)
    assert in_flight(user) == CAP


def test_jobs_that_end_leave_the_count(
    capped: None,
    sim: Simulator,
    local_aws: LocalAws,
    run_source: Callable[..., SqsEventSource],  # noqa: F811
) -> None:
    user = f"worker-{uuid.uuid4()}"
    doomed = f"Extract the fields. marker-{uuid.uuid4()}"
    sim.script(Fault.status(400, match=doomed))  # permanent: failed, then on to the DLQ
    status, body = post_jobs([*items(2), {"task": "extract", "input": doomed}], user=user)
    assert status == 202 and in_flight(user) == CAP
    job_ids = [j["id"] for j in body["jobs"]]

    run_source()
    wait_for(lambda: set(statuses(job_ids).values()) == {"succeeded", "failed"}, timeout=30)

    assert in_flight(user) == 0
    status, _ = post_jobs(items(CAP), user=user)
    assert status == 202


def test_a_redriven_failed_job_counts_again_until_it_ends(capped: None) -> None:
    user = f"redrive-{uuid.uuid4()}"
    _, body = post_jobs(items(1), user=user)
    job_id = body["jobs"][0]["id"]
    store = JobStore(get_settings().table_name)
    error = {"code": "UPSTREAM_ERROR", "message": "x"}

    assert store.to_failed(job_id, error, message_id="m1") and in_flight(user) == 0
    assert store.to_failed(job_id, error, message_id="m1") and in_flight(user) == 0  # no second release
    record = store.get(job_id) or {}
    match = {"owner": user, "task": record["task"], "input_sha256": record["input_sha256"]}
    assert store.claim(job_id, "m2", **match, lease_until=time.time() - 10).won and in_flight(user) == 1  # a redrive
    # A crashed attempt (its lease is over) is claimed again: still one in flight.
    assert store.claim(job_id, "m3", **match, lease_until=time.time() + 60).won and in_flight(user) == 1
    assert not store.claim(job_id, "m4", **match, lease_until=time.time() + 60).won  # m3 holds the lease
    assert store.to_succeeded(job_id, {"text": "ok"}, owner=user) and in_flight(user) == 0
    assert not store.to_failed(job_id, error, message_id="m4") and in_flight(user) == 0


def test_posting_jobs_counts_against_the_rate_limit(
    jobs_env: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "2")
    reset_client()
    user = f"poster-{uuid.uuid4()}"
    assert post_jobs(items(1), user=user)[0] == 202
    assert post_jobs(items(1), user=user)[0] == 202
    status, body = post_jobs(items(1), user=user)
    assert status == 429 and body["error"]["code"] == "RATE_LIMITED"
    assert in_flight(user) == 2


def test_a_batch_submission_past_the_cap_is_refused_and_its_budget_given_back(capped: None, sim: Simulator) -> None:
    from tests.integration.test_jobs_batches import BATCHES_PATH, get_usage
    from tests.integration.test_jobs_batches import post_jobs as post_batch

    user = f"batcher-{uuid.uuid4()}"
    status, body = post_batch(user, items(CAP), mode="batch")
    assert status == 202, body
    assert in_flight(user) == CAP
    before = get_usage(user)["remaining"]["budget_usd"]

    status, body = post_batch(user, items(1), mode="batch")

    assert status == 429 and "in flight" in body["error"]["message"]
    assert get_usage(user)["remaining"]["budget_usd"] == before
    assert in_flight(user) == CAP
    assert len([r for r in sim.requests if r.method == "POST" and r.path == BATCHES_PATH]) == 1
