"""A job posted to the local stack is processed by the in-stack SQS consumer."""

from __future__ import annotations

import time

import pytest

from local.simulator import Simulator
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e


def wait_for(stack: StackClient, job_id: str, user: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = stack.call("GET", f"/jobs/{job_id}", user=user)
        assert reply.status == 200
        if reply.body["status"] in ("succeeded", "failed"):
            return dict(reply.body)
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish in {timeout} s")


def test_posted_job_succeeds_and_only_its_owner_sees_it(stack: StackClient, sim: Simulator, user: str) -> None:
    reply = stack.post(
        "/jobs", {"items": [{"task": "summarize", "input": "Retries need jitter and a deadline."}]}, user
    )
    assert reply.status == 202
    [job] = reply.body["jobs"]
    assert job["status"] == "queued"

    done = wait_for(stack, job["id"], user)

    assert done["status"] == "succeeded"
    assert done["result"]["text"]  # type: ignore[index]
    assert len(sim.message_requests()) == 1
    other = stack.call("GET", f"/jobs/{job['id']}", user="someone-else")
    assert other.status == 404
    assert other.body["error"]["code"] == "NOT_FOUND"


def test_one_bad_item_enqueues_nothing(stack: StackClient, sim: Simulator, user: str) -> None:
    items = [{"task": "summarize", "input": "fine"}, {"task": "summarize", "input": ""}]
    reply = stack.post("/jobs", {"items": items}, user)
    assert reply.status == 422
    assert reply.body["error"]["code"] == "VALIDATION_ERROR"
    time.sleep(1)
    assert sim.message_requests() == []
