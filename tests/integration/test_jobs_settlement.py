"""A job's result rides in its call's settlement: one transaction charges the call and ends the job.

Against moto and real HTTP upstream (the simulator; a canned server where the answer must break
the schema). What must hold: the usage is counted exactly once whatever becomes of the job's part,
the job leaves its owner's in-flight count exactly once, and a result that needed a repair turn
(two calls, summed) is never written from the first call alone.
"""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from claudekit.claude.client import ClaudeClient
from claudekit.claude.pricing import Usage
from claudekit.deadline import Deadline
from claudekit.settings import get_settings
from claudekit.store import ledger
from claudekit.store.jobs import JobStore
from claudekit.tasks.classify import ClassifyBody
from claudekit.tasks.jobs import kinds
from claudekit.tasks.jobs.models import ClassifyJob, GenerateJob, IdeasJob
from tests.integration.test_jobs import jobs_env, post_jobs  # noqa: F401 (fixtures used by name)
from tests.integration.test_structured_output import CannedClaude, canned  # noqa: F401

ERROR = {"code": "UPSTREAM_ERROR", "message": "failed by another delivery"}


def store() -> JobStore:
    return JobStore(get_settings().table_name)


def claimed(user: str, item: dict[str, Any]) -> str:
    """A posted job, claimed by a delivery as the worker claims it."""
    status, body = post_jobs([item], user=user)
    assert status == 202, body
    job_id = str(body["jobs"][0]["id"])
    record = store().get(job_id) or {}
    won = store().claim(
        job_id,
        "m1",
        owner=user,
        task=str(record["task"]),
        input_sha256=str(record["input_sha256"]),
        lease_until=time.time() + 60,
    )
    assert won.won
    return job_id


def run(client: ClaudeClient, job_id: str, user: str, item: kinds.Item) -> tuple[dict[str, Any], bool]:
    def ride(answer: dict[str, Any]) -> list[dict[str, Any]]:
        return store().succeeded_items(job_id, answer, owner=user)

    with ledger.request(()):
        return kinds.run(client, item, user, Deadline.after(20), feature="jobs", max_retry_wait=1, ride=ride)


JOBS: list[tuple[dict[str, Any], type[kinds.Item]]] = [
    ({"task": "summarize", "input": "Summarise this."}, GenerateJob),
    ({"task": "classify", "input": {"text": "Charged twice.", "labels": ["billing", "bug"]}}, ClassifyJob),
    ({"task": "ideas", "input": {"topic": "Serverless costs", "count": 2}}, IdeasJob),
]


@pytest.mark.parametrize(("item", "model"), JOBS, ids=["generate", "classify", "ideas"])
def test_the_settlement_ends_the_job_with_its_result(
    jobs_env: None,  # noqa: F811
    client: ClaudeClient,
    item: dict[str, Any],
    model: type[kinds.Item],
) -> None:
    user = f"rider-{uuid.uuid4()}"
    job_id = claimed(user, item)

    answer, recorded = run(client, job_id, user, model.model_validate(item))

    assert recorded
    job = store().get(job_id) or {}
    assert job["status"] == "succeeded" and json.loads(str(job["result"])) == answer
    assert "lease_until" not in job
    assert store().in_flight(user) == 0
    report = client.ledger.report(user)
    assert report["requests"] == 1 and report["cost_usd"] == answer["cost_usd"] > 0


def test_a_rider_that_cannot_be_built_leaves_the_settlement_written(
    jobs_env: None,  # noqa: F811
    client: ClaudeClient,
) -> None:
    user = f"broken-{uuid.uuid4()}"
    job_id = claimed(user, JOBS[0][0])

    def broken(_answer: dict[str, Any]) -> list[dict[str, Any]]:
        raise RuntimeError("a bug in the rider")

    with ledger.request(()):
        answer, recorded = kinds.run(
            client,
            GenerateJob(task="summarize", input="Summarise this."),
            user,
            Deadline.after(20),
            feature="jobs",
            max_retry_wait=1,
            ride=broken,
        )

    assert not recorded and answer["text"]
    assert client.ledger.report(user)["requests"] == 1  # the call is charged all the same
    assert (store().get(job_id) or {})["status"] == "running"  # for the worker's own write


def test_a_job_no_longer_in_flight_is_not_ended_but_its_call_is_charged(
    jobs_env: None,  # noqa: F811
    client: ClaudeClient,
) -> None:
    user = f"late-{uuid.uuid4()}"
    text = f"Summarise that. {uuid.uuid4()}"
    job_id = claimed(user, {"task": "summarize", "input": text})
    # Another delivery failed the job while this one was calling Claude.
    assert store().to_failed(job_id, ERROR, message_id="m0", owner=user)
    assert store().in_flight(user) == 0

    answer, recorded = run(client, job_id, user, GenerateJob(task="summarize", input=text))

    assert not recorded
    assert (store().get(job_id) or {})["status"] == "failed"  # the transaction wrote nothing of the job
    report = client.ledger.report(user)
    assert report["requests"] == 1 and report["cost_usd"] == answer["cost_usd"] > 0  # charged once
    # The worker's own write then records the late result; the count is not given back twice.
    assert store().to_succeeded(job_id, answer, owner=user)
    assert (store().get(job_id) or {})["status"] == "succeeded"
    assert store().in_flight(user) == 0


def test_a_repaired_answer_is_not_written_by_the_first_calls_settlement(
    jobs_env: None,  # noqa: F811
    make_client: Any,
    canned: CannedClaude,  # noqa: F811
) -> None:
    client = make_client(anthropic_base_url=f"http://127.0.0.1:{canned.server_address[1]}")
    user = f"repaired-{uuid.uuid4()}"
    body = {"text": f"The parcel was late. {uuid.uuid4()}", "labels": ["billing", "shipping"]}
    job_id = claimed(user, {"task": "classify", "input": body})
    canned.replies += ['{"label": "banana"}', '{"label": "shipping"}']

    answer, recorded = run(client, job_id, user, ClassifyJob(task="classify", input=ClassifyBody(**body)))

    # Both calls were charged; the answer sums them, so the worker writes it on its own.
    assert not recorded and answer["label"] == "shipping"
    assert answer["usage"]["input_tokens"] == 20
    assert (store().get(job_id) or {})["status"] == "running"
    assert client.ledger.report(user)["requests"] == 2


def test_extra_items_whose_condition_fails_leave_the_settlement_written_alone(client: ClaudeClient) -> None:
    table = get_settings().table_name
    user = f"settle-{uuid.uuid4()}"
    reservation = client.ledger.admit(user, Decimal("0.5"))
    marker = f"marker#{uuid.uuid4()}"
    also = [
        {
            "Put": {
                "TableName": table,
                "Item": {"id": {"S": marker}},
                "ConditionExpression": "attribute_exists(id)",  # never holds: the item is new
            }
        }
    ]
    costs = ledger.Costs(Decimal("0.01"), Decimal("0.01"), Decimal("0.01"))
    usage = Usage(input_tokens=10, output_tokens=5)

    assert not client.ledger.settle(reservation, usage, costs, feature="generate", model="m", also=also)

    assert client.ledger.report(user)["requests"] == 1  # counted once: not twice, not lost
    assert client.ledger.report(user)["remaining"]["budget_usd"] == float(client.ledger.daily_budget - Decimal("0.01"))
    assert "Item" not in store().client.get_item(TableName=table, Key={"id": {"S": marker}})
    # And with a condition that holds, both parts are written in the one transaction.
    also[0]["Put"]["ConditionExpression"] = "attribute_not_exists(id)"
    reservation = client.ledger.admit(user, Decimal("0.5"))
    assert client.ledger.settle(reservation, usage, costs, feature="generate", model="m", also=also)
    assert "Item" in store().client.get_item(TableName=table, Key={"id": {"S": marker}})
    assert client.ledger.report(user)["requests"] == 2
