"""Every function of the built artifact starts and serves its events/ file, as Lambda would run it.

Nothing here imports the source tree's handlers: each function is a separate clean Python 3.13
process that sees only its build folder, the built layer and boto3. The simulator and moto are the
upstream and AWS, over real HTTP.
"""

from __future__ import annotations

import copy
import http.client
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local import aws
from local.artifact import Artifact, Invoker, web_adapter_app
from local.shim import ROOT
from local.simulator import Simulator
from tests.conftest import API_KEY

EnvFor = Callable[[str], dict[str, str]]
REST_CASES = [
    ("GenerateFunction", "generate.json", 200, {"text", "model", "stop_reason", "truncated", "usage", "cost_usd"}),
    ("GenerateFunction", "usage.json", 200, {"requests", "usage", "cost_usd", "plan", "limits", "remaining"}),
    ("GenerateFunction", "admin-usage.json", 200, {"requests", "usage", "cost_usd", "features", "models", "top_users"}),
    ("ClassifyFunction", "classify.json", 200, {"label", "model", "usage", "cost_usd"}),
    ("IdeasFunction", "ideas.json", 200, {"ideas", "model", "usage", "cost_usd"}),
    ("JobsFunction", "jobs-post.json", 202, {"jobs"}),
]


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "events" / name).read_text(encoding="utf-8"))
    return loaded


def start(artifact: Artifact, function: str, env: dict[str, str], python: Path, logs: Path) -> Invoker:
    return Invoker(python, env, artifact.task_root(function), logs.open("a"))


def assert_clean_logs(logs: Path, *secrets: str) -> None:
    """Logs are written (the function ran) and carry neither the key nor the caller's text."""
    text = logs.read_text(encoding="utf-8")
    assert "ModuleNotFoundError" not in text, text[-3000:]
    for secret in (API_KEY, *secrets):
        assert secret not in text


def test_the_artifact_is_isolated_from_the_dev_tree(artifact: Artifact, python: Path) -> None:
    """The runtime interpreter cannot see the dev virtualenv or the sources, only what ships."""
    assert not (artifact.task_root("GenerateFunction") / "claudekit").exists()
    assert (artifact.layer_python() / "claudekit" / "__init__.py").is_file()  # a name no layout change moves
    assert (artifact.layer_python() / "aws_xray_sdk").is_dir()
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('claudekit'), u.find_spec('moto'))"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert probe.stdout.split() == ["None", "None"]


@pytest.mark.parametrize(("function", "event_file", "status", "keys"), REST_CASES)
def test_rest_function_serves_its_event(
    artifact: Artifact,
    python: Path,
    env_for: EnvFor,
    sim: Simulator,
    logs: Path,
    function: str,
    event_file: str,
    status: int,
    keys: set[str],
) -> None:
    invoker = start(artifact, function, env_for(function), python, logs)
    try:
        assert "init_error" not in invoker.init, invoker.init.get("init_error")
        request = event(event_file)
        response = invoker.invoke(request)
    finally:
        invoker.close()
    assert response["statusCode"] == status, response["body"]
    body = json.loads(response["body"])
    assert keys <= set(body), body
    headers = response.get("headers") or {}
    headers |= {k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items()}
    assert headers["X-Request-Id"] == request["requestContext"]["requestId"]
    if event_file == "classify.json":
        assert body["label"] in json.loads(request["body"])["labels"]
    if event_file in ("generate.json", "classify.json", "ideas.json"):
        assert len(sim.message_requests()) >= 1
    text = json.loads(request["body"] or "{}")
    assert_clean_logs(logs, *(v for v in text.values() if isinstance(v, str) and len(v) > 20))


def test_a_job_goes_through_the_jobs_and_worker_functions(
    artifact: Artifact, python: Path, env_for: EnvFor, local_aws: aws.LocalAws, sim: Simulator, logs: Path
) -> None:
    """POST /jobs enqueues; the worker function, fed the SQS message as Lambda would, processes it;
    GET /jobs/{id} reports it succeeded."""
    sqs = local_aws.client("sqs")
    queue = local_aws.physical["JobsQueue"]
    sqs.purge_queue(QueueUrl=queue)  # what earlier tests enqueued
    jobs = start(artifact, "JobsFunction", env_for("JobsFunction"), python, logs)
    worker = start(artifact, "WorkerFunction", env_for("WorkerFunction"), python, logs)
    try:
        posted = jobs.invoke(event("jobs-post.json"))
        assert posted["statusCode"] == 202, posted["body"]
        ids = [job["id"] for job in json.loads(posted["body"])["jobs"]]

        received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
        assert len(received) == len(ids)
        sqs_event = event("worker.json")
        template_record = sqs_event["Records"][0]
        sqs_event["Records"] = [
            {
                **copy.deepcopy(template_record),
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "md5OfBody": message["MD5OfBody"],
                "eventSourceARN": local_aws.arns["JobsQueue"],
            }
            for message in received
        ]
        outcome = worker.invoke(sqs_event)
        assert outcome == {"batchItemFailures": []}
        assert len(sim.message_requests()) == len(ids)

        for job_id in ids:
            get = event("jobs-get.json")
            get["pathParameters"] = {"id": job_id}
            get["path"] = f"/jobs/{job_id}"
            status = jobs.invoke(get)
            assert status["statusCode"] == 200, status["body"]
            assert json.loads(status["body"])["status"] == "succeeded"
    finally:
        jobs.close()
        worker.close()
    assert_clean_logs(logs, *(item["input"] for item in json.loads(event("jobs-post.json")["body"])["items"]))


def test_stream_function_streams_through_its_start_script(
    artifact: Artifact, env_for: EnvFor, sim: Simulator, logs: Path
) -> None:
    """run.sh started as the Lambda Web Adapter starts it (port, readiness path), then one request
    with the request context header the adapter adds: delta events, then done."""
    request = event("stream.json")
    with (
        logs.open("a") as log,
        web_adapter_app(env_for("StreamFunction"), artifact.task_root("StreamFunction"), log) as port,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST",
            "/stream",
            body=request["body"],
            headers={
                "content-type": "application/json",
                "x-amzn-request-context": json.dumps(request["requestContext"]),
            },
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/event-stream")
        stream = response.read().decode()
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    assert events[0] == "delta"
    assert events[-1] == "done"
    assert set(events) == {"delta", "done"}
    assert len(sim.message_requests()) == 1
    assert_clean_logs(logs, json.loads(request["body"])["prompt"])


def test_a_conversation_goes_through_the_rest_and_stream_functions(
    artifact: Artifact, python: Path, env_for: EnvFor, sim: Simulator, logs: Path
) -> None:
    """POST /conversations, a buffered turn, a streamed turn (on the stream function), then GET
    /conversations/{id} returns both turns to their owner."""
    rest = start(artifact, "ConversationsFunction", env_for("ConversationsFunction"), python, logs)
    try:
        assert "init_error" not in rest.init, rest.init.get("init_error")
        created = rest.invoke(event("conversations-post.json"))
        assert created["statusCode"] == 201, created["body"]
        cid = json.loads(created["body"])["id"]

        def at(name: str) -> dict[str, Any]:
            request = event(name)
            request["pathParameters"] = {"id": cid}
            request["path"] = request["resource"].replace("{id}", cid)
            return request

        turn = rest.invoke(at("conversations-messages.json"))
        assert turn["statusCode"] == 200, turn["body"]
        assert json.loads(turn["body"])["messages"] == 2

        streamed = at("conversations-stream.json")
        with (
            logs.open("a") as log,
            web_adapter_app(env_for("StreamFunction"), artifact.task_root("StreamFunction"), log) as port,
        ):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(
                "POST",
                streamed["path"],
                body=streamed["body"],
                headers={
                    "content-type": "application/json",
                    "x-amzn-request-context": json.dumps(streamed["requestContext"]),
                },
            )
            response = conn.getresponse()
            assert response.status == 200
            stream = response.read().decode()
        assert [line for line in stream.splitlines() if line.startswith("event: ")][-1] == "event: done"

        history = rest.invoke(at("conversations-get.json"))
        assert history["statusCode"] == 200, history["body"]
        assert len(json.loads(history["body"])["messages"]) == 4
    finally:
        rest.close()
    assert len(sim.message_requests()) == 2
    assert_clean_logs(logs, json.loads(event("conversations-messages.json")["body"])["prompt"])


def test_the_built_layer_publishes_the_openapi_document(
    artifact: Artifact, python: Path, env_for: EnvFor, logs: Path
) -> None:
    """GET /openapi.json (public: no authorizer, so no claims) answers the committed document."""
    request = event("usage.json")
    request["resource"] = request["path"] = request["requestContext"]["resourcePath"] = "/openapi.json"
    request["requestContext"].pop("authorizer")
    invoker = start(artifact, "GenerateFunction", env_for("GenerateFunction"), python, logs)
    try:
        response = invoker.invoke(request)
    finally:
        invoker.close()
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"]) == json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
