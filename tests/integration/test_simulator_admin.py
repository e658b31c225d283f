"""The ``/_sim/`` admin API and the CLI: control a simulator from another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from local.simulator import Fault, Latency, Simulator

MODEL = "claude-sonnet-5-5"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator().start() as sim:
        yield sim


def call(sim_url: str, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(sim_url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def test_faults_config_requests_reset_over_http(sim: Simulator) -> None:
    client = anthropic.Anthropic(base_url=sim.url, api_key="test", max_retries=0)
    status, queued, _ = call(
        sim.url,
        "POST",
        "/_sim/faults",
        [{"kind": "status", "status": 429, "retry_after": 2, "match": "job-9"}, {"kind": "reset"}],
    )
    assert (status, queued["queued"]) == (200, 2)
    assert call(sim.url, "GET", "/_sim/faults")[1][0] == {
        "kind": "status",
        "status": 429,
        "error_type": "rate_limit_error",
        "retry_after": 2.0,
        "match": "job-9",
    }

    status, config, _ = call(sim.url, "POST", "/_sim/config", {"ttft": 0.01, "tps": 1000, "reply_tokens": 7})
    assert status == 200
    assert config["latency"] == {"ttft": 0.01, "tokens_per_second": 1000.0}
    assert sim.config.reply_tokens == 7

    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "job-9"}])
    assert limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "x"}])
    reply = client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "x"}])
    assert reply.usage.output_tokens == 7

    status, records, headers = call(sim.url, "GET", "/_sim/requests?path=/v1/messages")
    assert status == 200
    assert headers["request-id"].startswith("req_sim_")
    assert [(r["status"], r["fault"] and r["fault"]["kind"]) for r in records] == [
        (429, "status"),
        (None, "reset"),
        (200, None),
    ]
    assert records[0]["body"]["messages"][0]["content"] == "job-9"
    assert records[0]["headers"]["authorization"] == "Bearer test"

    assert call(sim.url, "POST", "/_sim/reset")[0] == 200
    assert sim.requests == []
    assert sim.config.reply_tokens is None


def test_clock_endpoint_expires_cache(sim: Simulator) -> None:
    client = anthropic.Anthropic(base_url=sim.url, api_key="test", max_retries=0)

    def usage() -> Any:
        return client.messages.create(
            model=MODEL,
            max_tokens=5,
            system=[{"type": "text", "text": "z" * 5000, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "hi"}],
        ).usage

    assert usage().cache_creation_input_tokens == 1250
    assert usage().cache_read_input_tokens == 1250
    assert call(sim.url, "POST", "/_sim/clock", {"advance": 301})[0] == 200
    assert usage().cache_creation_input_tokens == 1250


def test_admin_rejects_bad_input(sim: Simulator) -> None:
    status, body, _ = call(sim.url, "POST", "/_sim/faults", [{"kind": "explode"}])
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert call(sim.url, "POST", "/_sim/config", {"colour": "red"})[0] == 400
    assert call(sim.url, "GET", "/_sim/nope")[0] == 404
    assert call(sim.url, "GET", "/_sim/health")[1] == {"ok": True}


def test_unknown_api_path_is_not_found(sim: Simulator) -> None:
    status, body, headers = call(sim.url, "GET", "/v1/nothing")
    assert status == 404
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert headers["request-id"].startswith("req_sim_")


def test_python_api_configure_and_script(sim: Simulator) -> None:
    sim.script(Fault.status(529))
    config = sim.configure(latency=Latency(ttft=0.05), fail_rate=0.5, seed=3)
    assert config.latency.ttft == 0.05
    assert config.fail_rate == 0.5
    assert sim.faults.pending() == [Fault.status(529)]
    sim.reset()
    assert sim.faults.pending() == []
    assert sim.config.fail_rate == 0.0


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "local.simulator", "--host", "127.0.0.1", "--port", "0", "--ttft", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        assert call(url, "GET", "/_sim/health")[1] == {"ok": True}
        client = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0)
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_x_api_key_header_is_accepted(sim: Simulator) -> None:
    sim.configure(api_key="sk-right")
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        sim.url + "/v1/messages",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"x-api-key": "sk-right", "anthropic-version": "2023-06-01", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["type"] == "message"
    status, error, _ = call(sim.url, "POST", "/v1/messages", body)  # no key at all
    assert status == 401
    assert error["error"]["type"] == "authentication_error"
