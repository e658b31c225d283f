"""Every feature as a job: classify, ideas and generate bodies, realtime and through Message Batches.

A job's result has exactly the shape of its route's response, the request sent upstream is the
route's own (same prompt, same output schema), and item validation stays all-or-nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from claudekit.tasks.classify import ClassifyOut
from claudekit.tasks.generate import GenerateOut
from claudekit.tasks.ideas import IdeasOut
from local.simulator import Simulator
from local.sqs_source import SqsEventSource
from tests.integration import test_jobs_batches as batches
from tests.integration.queues import wait_for
from tests.integration.test_jobs_batches import BATCHES_PATH, context, get_job, jobs_of, post_jobs, rest_event

# The batch tests' fixtures: a fresh owner, a drained queue and worker, an SQS event source.
user, worker, run_source = batches.user, batches.worker, batches.run_source

pytestmark = pytest.mark.usefixtures("worker")

LABELS = ["billing", "bug", "feature request"]


def route(function: str, name: str, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the feature's own route answers for the same body."""
    module = __import__(f"functions.{function}.app", fromlist=["handler"])
    response = module.handler(rest_event(name, user_id, body=body), context())
    assert response["statusCode"] == 200
    return dict(json.loads(response["body"]))


def items() -> list[dict[str, Any]]:
    return [
        {"task": "classify", "input": {"text": f"I was charged twice {uuid.uuid4()}", "labels": LABELS}},
        {"task": "ideas", "input": {"topic": f"serverless costs {uuid.uuid4()}", "count": 2}},
        {
            "task": "summarize",
            "input": {"prompt": f"Summarise {uuid.uuid4()}", "system": "Be brief.", "max_tokens": 64},
        },
        {"task": "extract", "input": f"Fields of {uuid.uuid4()}"},
    ]


def check_results(results: list[dict[str, Any]]) -> None:
    classify, ideas, summary, extract = results
    assert set(classify) == set(ClassifyOut.model_fields) and classify["label"] in LABELS
    assert set(ideas) == set(IdeasOut.model_fields) and len(ideas["ideas"]) == 2
    assert set(summary) == set(GenerateOut.model_fields) and summary["text"]
    assert set(extract) == set(GenerateOut.model_fields) and extract["request_id"] is None


def test_every_feature_runs_as_a_realtime_job_in_its_routes_shape(
    sim: Simulator, user: str, run_source: Callable[[], SqsEventSource]
) -> None:
    sent = items()
    status, body = post_jobs(user, sent)
    assert status == 202
    job_ids = [j["id"] for j in body["jobs"]]

    run_source()
    wait_for(lambda: all(get_job(user, j)["status"] == "succeeded" for j in job_ids))

    jobs = [get_job(user, j) for j in job_ids]
    assert [j["task"] for j in jobs] == ["classify", "ideas", "summarize", "extract"]
    check_results([j["result"] for j in jobs])
    # The same shapes the routes answer, and the same request upstream as the route sends.
    assert set(route("classify", "classify.json", user, sent[0]["input"])) == set(jobs[0]["result"])
    assert set(route("ideas", "ideas.json", user, sent[1]["input"])) == set(jobs[1]["result"])
    classify_calls = [r.body for r in sim.message_requests() if sent[0]["input"]["text"] in json.dumps(r.body)]
    assert len(classify_calls) == 2 and classify_calls[0] == classify_calls[1]
    (summary_call,) = [r.body for r in sim.message_requests() if sent[2]["input"]["prompt"] in json.dumps(r.body)]
    assert summary_call["max_tokens"] == 64 and summary_call["system"][0]["text"] == "Be brief."


def test_every_feature_runs_through_message_batches(
    sim: Simulator, user: str, run_source: Callable[[], SqsEventSource]
) -> None:
    sent = items()
    status, body = post_jobs(user, sent, mode="batch")
    assert status == 202
    job_ids = [j["id"] for j in body["jobs"]]
    (create,) = [r for r in sim.requests if r.path == BATCHES_PATH]
    params = [req["params"] for req in create.body["requests"]]
    schema = params[0]["output_config"]["format"]["schema"]
    assert schema["properties"]["label"]["enum"] == LABELS
    assert "output_config" in params[1] and "output_config" not in params[2]

    run_source()
    wait_for(lambda: all(get_job(user, j)["status"] == "succeeded" for j in job_ids))

    check_results([get_job(user, j)["result"] for j in job_ids])
    assert sim.message_requests() == []  # nothing ran outside the batch


@pytest.mark.parametrize(
    "bad",
    [
        {"task": "classify", "input": {"text": "x", "labels": ["only one"]}},
        {"task": "classify", "input": "a string is not a classify body"},
        {"task": "ideas", "input": {"topic": "x", "count": 11}},
        {"task": "ideas", "input": {"topic": "x", "extra": 1}},
        {"task": "summarize", "input": {"prompt": "x", "task": "reason"}},
        {"task": "translate", "input": "x"},
    ],
)
def test_one_invalid_item_refuses_the_whole_submission(sim: Simulator, user: str, bad: dict[str, Any]) -> None:
    status, body = post_jobs(user, [*items(), bad])
    assert status == 422 and body["error"]["code"] == "VALIDATION_ERROR"
    assert jobs_of(user) == []
