"""Only upstream's failures count as upstream's: the breaker sees attempts (not loops) and only
health failures; every 503 says when to come back; our own dependencies fail as ours.

Real HTTP throughout: the SDK against the scripted simulator, boto3 against moto. Attempts are
counted at the simulator, and every case ends with a healthy request that succeeds.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from claudekit import errors
from claudekit.claude import secret
from claudekit.claude.client import ClaudeClient, reset_client
from claudekit.claude.request import ClaudeRequest
from claudekit.deadline import Deadline
from claudekit.store.cooldown import REFRESH_SECONDS
from local.aws import LocalAws
from local.shim import ROOT, LambdaContext, load_module
from local.simulator import Fault, Simulator

# A string JSON accepts but no encoder can send.
LONE_SURROGATE = "\udfff"


def request(prompt: str = "Explain circuit breakers briefly.", **kw: Any) -> ClaudeRequest:
    return ClaudeRequest(feature="generate", task="generate", user_id="user-health", prompt=prompt, **kw)


def calls(sim: Simulator, model: str | None = None) -> int:
    return len([r for r in sim.message_requests() if model is None or r.body.get("model") == model])


def breaker_state(local_aws: LocalAws, table: str, model: str) -> str | None:
    item = local_aws.client("dynamodb").get_item(TableName=table, Key={"id": {"S": f"claude:{model}"}}).get("Item")
    return item["state"]["S"] if item else None


# ---- nothing on our side counts as upstream's --------------------------------------------------


def test_unencodable_text_is_the_callers_error_never_retried_counted_or_sent_to_the_fallback(
    make_client: Any, sim: Simulator, local_aws: LocalAws, settings_env: dict[str, str]
) -> None:
    client = make_client(breaker_failure_threshold=2, model_balanced="claude-sonnet-4-5")
    for _ in range(5):
        with pytest.raises(errors.InvalidRequest) as caught:
            client.complete(request(system=f"Be brief {LONE_SURROGATE}"), Deadline.after(10))
        assert caught.value.status == 422 and LONE_SURROGATE not in caught.value.message
    with pytest.raises(errors.InvalidRequest):
        list(client.stream(request(prompt=f"hi {LONE_SURROGATE}"), Deadline.after(10)))

    assert calls(sim) == 0
    assert breaker_state(local_aws, settings_env["TABLE_NAME"], "claude-sonnet-4-5") is None
    # The innocent request after them is served by its routed model, not the fallback.
    result = client.complete(request(), Deadline.after(10))
    assert result.model == "claude-sonnet-4-5" and result.attempts == 1


def test_malformed_replies_are_retried_but_never_open_the_circuit(
    make_client: Any, sim: Simulator, local_aws: LocalAws, settings_env: dict[str, str]
) -> None:
    """A 200 of the wrong shape is worth another attempt, but the service did answer: however many
    arrive, the breaker stays closed and the next healthy request is served by its routed model."""
    client = make_client(breaker_failure_threshold=2, model_fallback="", model_balanced="claude-sonnet-4-5")
    sim.script(*[Fault.malformed()] * 9)
    for _ in range(3):
        with pytest.raises(errors.UpstreamMalformed) as caught:
            client.complete(request(), Deadline.after(10))
        assert caught.value.status == 502 and caught.value.code == "UPSTREAM_ERROR"
    assert calls(sim) == 9  # three attempts each: retried, never cut short by an open circuit
    assert breaker_state(local_aws, settings_env["TABLE_NAME"], "claude-sonnet-4-5") is None
    result = client.complete(request(), Deadline.after(10))
    assert result.model == "claude-sonnet-4-5" and result.attempts == 1


def test_x_should_retry_overrides_the_status(make_client: Any, sim: Simulator) -> None:
    client = make_client(model_fallback="")
    sim.script(Fault.status(529, headers={"x-should-retry": "false"}))
    with pytest.raises(errors.UpstreamUnavailable):
        client.complete(request(), Deadline.after(10))
    assert calls(sim) == 1

    sim.script(Fault.status(400, headers={"x-should-retry": "true"}))
    assert client.complete(request(), Deadline.after(10)).attempts == 2


# ---- every 503 says when to come back ----------------------------------------------------------


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("case", ["529-without-header", "refused", "stream-before-first-delta", "spend-limit"])
def test_every_503_carries_retry_after(make_client: Any, sim: Simulator, case: str) -> None:
    client = make_client(model_fallback="")
    if case == "refused":
        client = make_client(model_fallback="", anthropic_base_url=f"http://127.0.0.1:{_dead_port()}")
    if case == "529-without-header":
        sim.script(*[Fault.status(529)] * 3)
    if case == "spend-limit":
        sim.script(Fault.status(429, error_code="enforced_spend_limit_reached"))
    if case == "stream-before-first-delta":
        sim.script(*[Fault.stream_error(after_deltas=0)] * 3)

    with pytest.raises(errors.ClaudeError) as caught:
        if case == "stream-before-first-delta":
            list(client.stream(request(), Deadline.after(10)))
        else:
            client.complete(request(), Deadline.after(10))

    assert caught.value.status == 503
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    sim.reset()
    assert make_client().complete(request(), Deadline.after(10)).attempts == 1


def test_open_circuit_says_when_it_half_opens(
    make_client: Any, sim: Simulator, local_aws: LocalAws, settings_env: dict[str, str]
) -> None:
    model = "claude-opus-4-1"
    client = make_client(
        breaker_failure_threshold=2, breaker_recovery_seconds=3, model_fallback="", model_balanced=model
    )
    sim.script(*[Fault.status(529)] * 2)
    with pytest.raises(errors.UpstreamUnavailable) as first:
        client.complete(request(), Deadline.after(10))
    # Two attempts inside one loop opened it: the breaker counts attempts, not loops.
    assert calls(sim) == 2 and breaker_state(local_aws, settings_env["TABLE_NAME"], model) == "OPEN"
    # The loop's own error already says when the circuit half-opens (at most its recovery time).
    assert first.value.retry_after is not None and 1 <= first.value.retry_after <= 3

    time.sleep(1.2)
    with pytest.raises(errors.CircuitOpen) as caught:
        client.complete(request(), Deadline.after(10))
    assert caught.value.status == 503 and caught.value.retry_after is not None
    assert caught.value.retry_after <= 2  # the time left, not a constant recovery time
    assert calls(sim) == 2

    time.sleep(caught.value.retry_after + 0.1)
    assert client.complete(request(), Deadline.after(10)).model == model  # the probe closes it
    assert breaker_state(local_aws, settings_env["TABLE_NAME"], model) == "CLOSED"


# ---- the breaker: attempts, health failures only, and fleet-wide quickly -----------------------


def test_upstream_429_pauses_the_model_for_every_instance_and_never_trips_the_breaker(
    make_client: Any, sim: Simulator, local_aws: LocalAws, settings_env: dict[str, str]
) -> None:
    model = "claude-sonnet-4-5"
    one = make_client(breaker_failure_threshold=1, model_fallback="", model_balanced=model)
    other = make_client(breaker_failure_threshold=1, model_fallback="", model_balanced=model)  # another instance
    sim.script(Fault.status(429, retry_after=120))

    with pytest.raises(errors.UpstreamRateLimited) as caught:
        one.complete(request(), Deadline.after(10))
    assert caught.value.retry_after == 120
    with pytest.raises(errors.UpstreamRateLimited) as paused:
        other.complete(request(), Deadline.after(10))

    assert paused.value.status == 503 and paused.value.retry_after is not None
    assert 100 < paused.value.retry_after <= 120  # the time upstream asked for, not the breaker's 30 s
    assert calls(sim) == 1  # the other instance did not call
    assert breaker_state(local_aws, settings_env["TABLE_NAME"], model) is None
    # Another model is not paused.
    assert make_client(model_fallback="").complete(request(), Deadline.after(10)).attempts == 1


def test_twenty_parallel_callers_stop_hammering_a_dead_upstream_within_a_few_attempts(
    make_client: Any, sim: Simulator, local_aws: LocalAws, settings_env: dict[str, str]
) -> None:
    """The measurement of issue 11: before, 111 upstream calls reached a dead upstream from 20
    parallel callers before the circuit opened (it counted whole loops). Now it counts attempts
    and each loop checks it between attempts."""
    model = "claude-opus-4-1"
    client = make_client(
        breaker_failure_threshold=5, breaker_recovery_seconds=2, model_fallback="", model_balanced=model
    )
    sim.configure(fail_rate=1.0, fail_status=529)

    def one() -> str:
        try:
            client.complete(request(), Deadline.after(10))
        except errors.ClaudeError as exc:
            return exc.code
        return "ok"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda _: one(), range(20)))

    made = calls(sim, model)
    print(f"upstream calls from 20 parallel callers into a dead upstream: {made}")
    assert set(outcomes) == {"UPSTREAM_UNAVAILABLE"}
    # One attempt each in flight at once, plus the retries that started before the threshold's
    # failure came back: at most threshold - 1.
    assert made <= 20 + 4
    assert breaker_state(local_aws, settings_env["TABLE_NAME"], model) == "OPEN"
    # Later callers do not reach upstream at all.
    with pytest.raises(errors.CircuitOpen):
        client.complete(request(), Deadline.after(10))
    assert calls(sim, model) == made

    sim.configure(fail_rate=0.0)
    time.sleep(2.1)
    assert client.complete(request(), Deadline.after(10)).model == model


# ---- our own dependencies ----------------------------------------------------------------------


class _Throttling(BaseHTTPRequestHandler):
    """Secrets Manager answering every call with ThrottlingException."""

    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/x-amz-json-1.1")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def throttled_secrets(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Throttling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    secret.reset()
    reset_client()
    yield
    server.shutdown()
    monkeypatch.delenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", raising=False)
    secret.reset()
    reset_client()


def test_secrets_manager_throttling_is_a_retryable_503_that_names_nothing(
    throttled_secrets: None, sim: Simulator, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BREAKER_FAILURE_THRESHOLD", "1")
    reset_client()
    module = load_module(ROOT / "functions" / "generate" / "app.py", "throttled_generate")
    event: dict[str, Any] = json.loads(Path(ROOT / "events" / "generate.json").read_text())

    result = module.handler(event, LambdaContext("generate", timeout=29))

    assert result["statusCode"] == 503
    headers = {k: v[0] for k, v in (result.get("multiValueHeaders") or {}).items()} | (result.get("headers") or {})
    assert int(headers["Retry-After"]) >= 1
    error = json.loads(result["body"])["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    secret_id = settings_env["CLAUDE_SECRET_ID"]
    assert secret_id not in result["body"] and "arn:" not in result["body"]
    assert _Throttling.hits >= 2  # retried inside the call, like any transient failure
    assert calls(sim) == 0

    # Secrets Manager recovers: the next request succeeds (the breaker never counted it).
    monkeypatch.delenv("AWS_ENDPOINT_URL_SECRETS_MANAGER")
    secret.reset()
    assert module.handler(event, LambdaContext("generate", timeout=29))["statusCode"] == 200


def test_a_bug_around_the_call_is_a_500_never_counted(make_client: Any, sim: Simulator, local_aws: LocalAws) -> None:
    client: ClaudeClient = make_client(breaker_failure_threshold=1, model_balanced="claude-haiku-4-5")

    def broken(model: str, timeout: float) -> Any:
        raise KeyError("a bug of ours")

    client._create = lambda model, timeout, params: broken(model, timeout)  # type: ignore[method-assign]
    with pytest.raises(errors.InternalError) as caught:
        client.complete(request(), Deadline.after(10))
    assert caught.value.status == 500 and "bug" not in caught.value.message
    assert calls(sim) == 0


def test_failures_spread_over_instances_open_the_circuit_for_all(
    make_client: Any, sim: Simulator, local_aws: LocalAws, settings_env: dict[str, str]
) -> None:
    """Each instance alone stays under the threshold; together they reach it. Separate containers
    are simulated by forgetting Powertools' per-container counters between calls."""
    from aws_lambda_powertools.utilities.circuit_breaker import base as breaker_base

    model = "claude-opus-4-1"
    config = {"breaker_failure_threshold": 4, "retry_max_attempts": 1, "model_fallback": "", "model_balanced": model}
    instances = [make_client(**config), make_client(**config)]
    sim.configure(fail_rate=1.0, fail_status=500)

    for turn in range(4):
        breaker_base._LOCAL_FAILURES.clear()
        with pytest.raises(errors.UpstreamServerError):
            instances[turn % 2].complete(request(), Deadline.after(10))

    assert breaker_state(local_aws, settings_env["TABLE_NAME"], model) == "OPEN"
    time.sleep(REFRESH_SECONDS + 0.1)  # the other instance's cached view of the circuit expires by then
    for instance in instances:
        with pytest.raises(errors.CircuitOpen):
            instance.complete(request(), Deadline.after(10))
    assert calls(sim, model) == 4


def test_a_success_ends_the_fleets_run_of_failures(
    make_client: Any, sim: Simulator, local_aws: LocalAws, settings_env: dict[str, str]
) -> None:
    model = "claude-opus-4-1"
    client = make_client(breaker_failure_threshold=3, retry_max_attempts=1, model_fallback="", model_balanced=model)
    for _ in range(3):
        sim.script(*[Fault.status(500)] * 2)
        for _ in range(2):
            with pytest.raises(errors.UpstreamServerError):
                client.complete(request(), Deadline.after(10))
        assert client.complete(request(), Deadline.after(10)).model == model

    assert breaker_state(local_aws, settings_env["TABLE_NAME"], model) is None


@pytest.mark.parametrize("case", ["529-without-header", "spend-limit"])
def test_the_rest_route_answers_503_with_a_retry_after_header(
    settings_env: dict[str, str], sim: Simulator, case: str
) -> None:
    module = load_module(ROOT / "functions" / "generate" / "app.py", f"retry_after_{case}")
    event: dict[str, Any] = json.loads(Path(ROOT / "events" / "generate.json").read_text())
    if case == "529-without-header":
        sim.configure(fail_rate=1.0, fail_status=529)  # the routed model and the fallback
    else:
        sim.script(Fault.status(429, error_code="enforced_spend_limit_reached"))

    result = module.handler(event, LambdaContext("generate", timeout=29))

    assert result["statusCode"] == 503
    headers = {k: v[0] for k, v in (result.get("multiValueHeaders") or {}).items()} | (result.get("headers") or {})
    assert int(headers["Retry-After"]) >= 1
    assert json.loads(result["body"])["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    sim.configure(fail_rate=0.0)
    assert module.handler(event, LambdaContext("generate", timeout=29))["statusCode"] == 200
