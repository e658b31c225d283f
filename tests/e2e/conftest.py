"""The local stack (`python -m local.stack`, what `make run` starts) in a subprocess, driven over HTTP.

Claude is an independent simulator started here, in the test process, and handed to the stack
through ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY, exactly as a developer would point it elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local.simulator import Simulator

ROOT = Path(__file__).resolve().parents[2]
E2E_KEY = "sk-e2e-secret-value"

# Small limits so the limit paths are reachable; each test uses its own user id.
STACK_ENV = {
    "RATE_LIMIT_PER_MINUTE": "6",
    "DAILY_BUDGET_USD": "0.05",
    "PLANS": '{"free": {"requests_per_minute": 2, "daily_budget_usd": 0.05}}',
    "MAX_JOBS_IN_FLIGHT": "3",
    "RETRY_BASE_DELAY_SECONDS": "0.02",
    "RETRY_MAX_DELAY_SECONDS": "0.1",
    "REQUEST_TIMEOUT_SECONDS": "1",
    # The breaker counts every failed attempt; tests that script failures must not trip it for the
    # tests after them (its behaviour is tested in tests/integration/test_upstream_health.py).
    "BREAKER_FAILURE_THRESHOLD": "1000",
}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class StackClient:
    url: str
    log: Path

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        user: str | None = None,
        raw: bytes | None = None,
        groups: str | None = None,
    ) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if user:
            request.add_header("X-User-Id", user)
        if groups is not None:
            request.add_header("X-User-Groups", groups)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, headers, payload = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, headers, payload = error.code, dict(error.headers), error.read()
        return Reply(status, {k.lower(): v for k, v in headers.items()}, json.loads(payload) if payload else None)

    def post(self, path: str, body: Any, user: str) -> Reply:
        return self.call("POST", path, body, user)

    def usage(self, user: str) -> dict[str, Any]:
        reply = self.call("GET", "/usage", user=user)
        assert reply.status == 200
        return dict(reply.body)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def e2e_sim() -> Iterator[Simulator]:
    with Simulator(api_key=E2E_KEY).start() as sim:
        yield sim


@pytest.fixture(scope="session")
def stack(e2e_sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackClient]:
    port = _free_port()
    log = tmp_path_factory.mktemp("stack") / "stack.log"
    env = {
        **os.environ,
        **STACK_ENV,
        "PORT": str(port),
        "ANTHROPIC_BASE_URL": e2e_sim.url,
        "ANTHROPIC_API_KEY": E2E_KEY,
    }
    env.pop("AWS_ENDPOINT_URL", None)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "local.stack"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    client = StackClient(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"local stack exited early:\n{log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("local stack did not start within 60 s")
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def sim(e2e_sim: Simulator) -> Iterator[Simulator]:
    e2e_sim.reset()
    e2e_sim.configure(api_key=E2E_KEY)
    yield e2e_sim
    e2e_sim.reset()
    e2e_sim.configure(api_key=E2E_KEY)


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"
