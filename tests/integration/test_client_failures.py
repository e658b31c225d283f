"""The client's failure matrix, over real HTTP: SDK -> simulator, boto3 -> moto.

Each case asserts the outcome the caller sees, how many upstream attempts happened
(counted at the simulator), and the metrics emitted.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from claudekit import errors
from claudekit.claude.client import ClaudeClient
from claudekit.claude.request import ClaudeRequest, ClaudeResult, Delta
from claudekit.deadline import Deadline
from claudekit.settings import Settings
from local.aws import LocalAws
from local.simulator import Fault, Simulator
from tests.conftest import emf_records, metric_values


def request(prompt: str = "Explain retries with jitter in two sentences.", **kw: Any) -> ClaudeRequest:
    return ClaudeRequest(feature="generate", task="generate", user_id="user-1", prompt=prompt, **kw)


def attempts(sim: Simulator) -> int:
    return len(sim.message_requests())


def test_success_reports_usage_cost_and_metrics(client: ClaudeClient, sim: Simulator, capsys: Any) -> None:
    result = client.complete(request(), Deadline.after(10))

    assert result.text and result.stop_reason == "end_turn" and not result.truncated
    assert result.model == "claude-sonnet-5-5"
    assert attempts(sim) == 1
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    out = capsys.readouterr().out
    [record] = emf_records(out)
    # Per feature and model, plus a dimensionless total for account-wide alarms: nothing else.
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["feature", "model"], []]
    assert (record["feature"], record["model"]) == ("generate", "claude-sonnet-5-5")
    assert record["InputTokens"] == [result.usage.input_tokens]
    assert record["CostUSD"] == [pytest.approx(float(result.cost_usd))]
    assert record["Retries"] == [0]


def recording_client(waits: list[float], **overrides: Any) -> ClaudeClient:
    """A client whose retry waits are recorded (and still slept: the model's cooldown runs on real time)."""

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    return ClaudeClient(Settings(**overrides), sleep=sleep)


@pytest.mark.usefixtures("settings_env")
def test_429_with_retry_after_is_honoured(sim: Simulator, capsys: Any) -> None:
    waits: list[float] = []
    client = recording_client(waits)
    sim.script(Fault.status(429, retry_after_ms=300, retry_after=9))

    result = client.complete(request(), Deadline.after(10))

    first, second = sim.message_requests()
    assert first.status == 429 and second.status == 200
    assert waits == [0.3]  # exactly what the server asked, retry-after-ms winning over retry-after
    assert result.attempts == 2
    assert metric_values(capsys.readouterr().out, "Retries") == [1]


def test_529_then_success(client: ClaudeClient, sim: Simulator) -> None:
    sim.script(Fault.status(529))
    result = client.complete(request(), Deadline.after(10))
    assert attempts(sim) == 2 and result.attempts == 2


def test_500_until_retries_are_exhausted(client: ClaudeClient, sim: Simulator, capsys: Any) -> None:
    sim.script(*[Fault.status(500)] * 5)

    with pytest.raises(errors.UpstreamServerError) as caught:
        client.complete(request(), Deadline.after(10))

    assert (caught.value.code, caught.value.status) == ("UPSTREAM_ERROR", 502)
    assert attempts(sim) == 3  # RETRY_MAX_ATTEMPTS; a 5xx is not a reason to change model
    out = capsys.readouterr().out
    assert metric_values(out, "Errors_UPSTREAM_ERROR") == [1]
    assert "InputTokens" not in out  # nothing was produced, nothing is billed


def test_529_exhausted_falls_back_to_another_model(client: ClaudeClient, sim: Simulator) -> None:
    sim.script(*[Fault.status(529)] * 3)

    result = client.complete(request(), Deadline.after(10))

    models = [r.body["model"] for r in sim.message_requests()]
    assert models == ["claude-sonnet-5-5"] * 3 + ["claude-haiku-5-5"]
    assert result.model == "claude-haiku-5-5" and result.attempts == 4


def test_401_refreshes_the_key_once_after_rotation(
    client: ClaudeClient, sim: Simulator, local_aws: LocalAws, settings_env: dict[str, str]
) -> None:
    client.complete(request(), Deadline.after(10))  # caches the current key
    local_aws.client("secretsmanager").put_secret_value(
        SecretId=settings_env["CLAUDE_SECRET_ID"], SecretString=json.dumps({"api_key": "sk-rotated"})
    )
    sim.configure(api_key="sk-rotated")
    before = attempts(sim)

    result = client.complete(request(), Deadline.after(10))

    statuses = [r.status for r in sim.message_requests()[before:]]
    assert statuses == [401, 200]
    assert result.text
    assert sim.message_requests()[-1].headers.get("authorization") == "Bearer sk-rotated"


def test_401_with_a_revoked_key_is_upstream_auth(client: ClaudeClient, sim: Simulator, capsys: Any) -> None:
    sim.configure(api_key="sk-someone-else")

    with pytest.raises(errors.UpstreamAuth) as caught:
        client.complete(request(), Deadline.after(10))

    assert (caught.value.code, caught.value.status) == ("UPSTREAM_AUTH", 502)
    assert [r.status for r in sim.message_requests()] == [401, 401]  # one refresh, one retry, no more
    assert "sk-test-key" not in capsys.readouterr().out


@pytest.mark.parametrize("status", [400, 404])
def test_client_errors_are_not_retried(client: ClaudeClient, sim: Simulator, status: int) -> None:
    sim.script(Fault.status(status))
    with pytest.raises(errors.UpstreamRejected):
        client.complete(request(), Deadline.after(10))
    assert attempts(sim) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.status(429, error_code="enforced_spend_limit_reached"),
        Fault.status(402),
        Fault.status(400, error_type="billing_error"),
    ],
    ids=["429-spend-limit", "402", "billing_error"],
)
def test_spend_limit_is_never_retried_nor_sent_to_the_fallback(
    client: ClaudeClient, sim: Simulator, fault: Fault
) -> None:
    sim.script(fault)
    with pytest.raises(errors.SpendLimitReached) as caught:
        client.complete(request(), Deadline.after(10))
    assert caught.value.status == 503 and caught.value.retry_after is not None
    assert attempts(sim) == 1  # not retried, and the fallback model was not tried either
    assert client.complete(request(), Deadline.after(10)).attempts == 1  # and the circuit did not count it


def test_hang_times_out_then_succeeds(make_client: Any, sim: Simulator) -> None:
    client = make_client(request_timeout_seconds=0.5)
    sim.script(Fault.hang(3))
    result = client.complete(request(), Deadline.after(10))
    assert result.attempts == 2 and attempts(sim) == 2


def test_hang_every_time_is_upstream_timeout(make_client: Any, sim: Simulator, capsys: Any) -> None:
    client = make_client(request_timeout_seconds=0.3, model_fallback="")
    sim.script(*[Fault.hang(3)] * 3)
    with pytest.raises(errors.UpstreamTimeout) as caught:
        client.complete(request(), Deadline.after(10))
    assert caught.value.status == 504
    assert attempts(sim) == 3
    assert metric_values(capsys.readouterr().out, "Errors_UPSTREAM_TIMEOUT") == [1]


def test_connection_refused_is_upstream_unavailable(
    make_client: Any, sim: Simulator, capsys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    client = make_client(anthropic_base_url=f"http://127.0.0.1:{dead_port}", model_fallback="")
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        client.complete(request(), Deadline.after(10))
    assert (caught.value.code, caught.value.status) == ("UPSTREAM_UNAVAILABLE", 503)
    out = capsys.readouterr().out
    assert metric_values(out, "Errors_UPSTREAM_UNAVAILABLE") == [1]
    # No server saw the attempts, so count them in the failure log line: all three were made.
    [failed] = [r for r in caplog.records if r.getMessage() == "claude call failed"]
    assert failed.attempts == 3  # type: ignore[attr-defined]


def test_connection_reset_is_retried(client: ClaudeClient, sim: Simulator) -> None:
    sim.script(Fault.reset())
    result = client.complete(request(), Deadline.after(10))
    assert result.attempts == 2


def test_malformed_json_is_retried_then_reported(client: ClaudeClient, sim: Simulator) -> None:
    sim.script(Fault.malformed())
    assert client.complete(request(), Deadline.after(10)).attempts == 2

    sim.script(*[Fault.malformed()] * 3)
    with pytest.raises(errors.UpstreamMalformed):
        client.complete(request(), Deadline.after(10))


@pytest.mark.usefixtures("settings_env")
def test_deadline_shorter_than_retry_after_gives_up_at_once(sim: Simulator) -> None:
    waits: list[float] = []
    client = recording_client(waits, model_fallback="")
    sim.script(Fault.status(429, retry_after=30))

    with pytest.raises(errors.UpstreamUnavailable) as caught:
        client.complete(request(), Deadline.after(20))

    assert waits == []  # it did not sleep toward the 30 s (nor the 20 s deadline)
    assert caught.value.retry_after == 30  # and tells the caller how long to wait
    assert attempts(sim) == 1


def test_no_time_left_makes_no_call(client: ClaudeClient, sim: Simulator) -> None:
    with pytest.raises(errors.UpstreamTimeout):
        client.complete(request(), Deadline.after(0.1))
    assert attempts(sim) == 0


def test_oversize_input_is_rejected_before_any_call(make_client: Any, sim: Simulator) -> None:
    client = make_client(max_input_chars=100)
    with pytest.raises(errors.InputTooLarge) as caught:
        client.complete(request("x" * 101), Deadline.after(10))
    assert caught.value.status == 413
    assert attempts(sim) == 0


def test_max_tokens_is_always_set_and_capped(make_client: Any, sim: Simulator) -> None:
    client = make_client(max_tokens_ceiling=50)
    client.complete(request(), Deadline.after(10))
    assert sim.message_requests()[-1].body["max_tokens"] == 50
    with pytest.raises(errors.InvalidRequest):
        client.complete(request(max_tokens=51), Deadline.after(10))


def test_truncated_answer_is_reported(client: ClaudeClient, sim: Simulator) -> None:
    sim.configure(reply_tokens=500)
    result = client.complete(request(max_tokens=20), Deadline.after(10))
    assert result.truncated and result.stop_reason == "max_tokens"
    assert result.usage.output_tokens == 20


def test_long_system_prompt_is_cached_and_billed_as_cache_read(client: ClaudeClient, sim: Simulator) -> None:
    system = "You are a meticulous reviewer. " * 200  # ~1500 tokens: above Sonnet's 1024 minimum
    first = client.complete(request(system=system), Deadline.after(10))
    second = client.complete(request(system=system), Deadline.after(10))

    assert sim.message_requests()[0].body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.cost_usd < first.cost_usd


def test_short_system_prompt_is_not_marked_for_caching(client: ClaudeClient, sim: Simulator) -> None:
    client.complete(request(system="Be brief."), Deadline.after(10))
    assert "cache_control" not in sim.message_requests()[0].body["system"][0]


def test_circuit_opens_after_repeated_failures(make_client: Any, sim: Simulator) -> None:
    client = make_client(
        breaker_failure_threshold=2, retry_max_attempts=1, model_fallback="", model_balanced="claude-opus-4-1"
    )
    sim.script(*[Fault.status(500)] * 2)
    for _ in range(2):
        with pytest.raises(errors.UpstreamServerError):
            client.complete(request(), Deadline.after(10))

    with pytest.raises(errors.UpstreamUnavailable) as caught:
        client.complete(request(), Deadline.after(10))

    assert caught.value.retry_after is not None
    assert attempts(sim) == 2  # the open circuit kept the third call from reaching upstream


def collect(stream: Any) -> tuple[list[str], ClaudeResult | None]:
    texts: list[str] = []
    final: ClaudeResult | None = None
    for item in stream:
        if isinstance(item, Delta):
            texts.append(item.text)
        else:
            final = item
    return texts, final


def test_stream_costs_the_same_as_the_unstreamed_answer(client: ClaudeClient, sim: Simulator) -> None:
    system = "You are a meticulous reviewer. " * 200
    plain = client.complete(request(system=system), Deadline.after(10))  # writes the cache
    again = client.complete(request(system=system), Deadline.after(10))  # reads it
    texts, streamed = collect(client.stream(request(system=system), Deadline.after(10)))

    assert streamed is not None
    assert "".join(texts) == streamed.text == again.text == plain.text
    assert streamed.usage == again.usage
    assert streamed.cost_usd == again.cost_usd


def test_truncated_stream_before_first_text_is_retried(client: ClaudeClient, sim: Simulator) -> None:
    sim.script(Fault.truncate(after_deltas=0))
    texts, final = collect(client.stream(request(), Deadline.after(10)))
    assert final is not None and final.attempts == 2 and "".join(texts) == final.text


def test_truncated_stream_after_text_raises_and_bills_what_was_produced(
    client: ClaudeClient, sim: Simulator, capsys: Any
) -> None:
    sim.script(Fault.truncate(after_deltas=2))
    texts: list[str] = []
    with pytest.raises(errors.UpstreamServerError):
        for item in client.stream(request(), Deadline.after(10)):
            assert isinstance(item, Delta)
            texts.append(item.text)
    assert len(texts) == 2
    assert attempts(sim) == 1  # never retried once the caller has text
    out = capsys.readouterr().out
    assert metric_values(out, "OutputTokens")[0] > 0
    assert metric_values(out, "Errors_UPSTREAM_ERROR") == [1]


def test_error_event_mid_stream_is_upstream_unavailable(client: ClaudeClient, sim: Simulator) -> None:
    sim.script(Fault.stream_error(after_deltas=1, error_type="overloaded_error"))
    with pytest.raises(errors.UpstreamUnavailable):
        collect(client.stream(request(), Deadline.after(10)))
    assert attempts(sim) == 1
