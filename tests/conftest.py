"""Shared fixtures: moto provisioned from template.yaml, the Claude simulator, and a wired client.

Everything talks over real HTTP on loopback: boto3 to moto, the anthropic SDK to the simulator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.circuit_breaker import base as breaker_base

from claudekit import runtime
from claudekit.claude.client import ClaudeClient
from claudekit.settings import Settings
from local import aws
from local.simulator import Simulator

API_KEY = "sk-test-key"


@pytest.fixture(scope="session")
def local_aws() -> Iterator[aws.LocalAws]:
    env = aws.start(api_key=API_KEY)
    os.environ["AWS_ENDPOINT_URL"] = env.endpoint
    os.environ.update(env.environment)
    yield env
    env.stop()


@pytest.fixture(scope="session")
def _sim_server() -> Iterator[Simulator]:
    with Simulator(api_key=API_KEY).start() as sim:
        yield sim


@pytest.fixture
def sim(_sim_server: Simulator) -> Iterator[Simulator]:
    """The simulator, reset before each test (faults, records, cache, latency)."""
    _sim_server.reset()
    _sim_server.configure(api_key=API_KEY)
    yield _sim_server
    _sim_server.reset()


@pytest.fixture
def settings_env(local_aws: aws.LocalAws, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The functions' environment: the template's variables resolved locally, fast retries for tests."""
    env = {
        **local_aws.environment,
        "ANTHROPIC_BASE_URL": sim.url,
        "RETRY_BASE_DELAY_SECONDS": "0.01",
        "RETRY_MAX_DELAY_SECONDS": "0.05",
        "REQUEST_TIMEOUT_SECONDS": "2",
        "DEADLINE_MARGIN_SECONDS": "0.2",
        "SECRET_MAX_AGE_SECONDS": "300",
        "BREAKER_FAILURE_THRESHOLD": "1000",
        "RATE_LIMIT_PER_MINUTE": "1000",
        "DAILY_BUDGET_USD": "100",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # A test may rotate the key; every test starts with the one the simulator accepts.
    local_aws.client("secretsmanager").put_secret_value(
        SecretId=env["CLAUDE_SECRET_ID"], SecretString=json.dumps({"api_key": API_KEY})
    )
    # Cooldowns and circuits an earlier test left (in the table and in Powertools' per-container
    # failure counters) would pause or trip this test's models.
    table = local_aws.client("dynamodb")
    for page in table.get_paginator("scan").paginate(TableName=env["TABLE_NAME"], ProjectionExpression="id"):
        for item in page["Items"]:
            if item["id"]["S"].startswith(("cooldown#", "claude:", "breaker-count#")):
                table.delete_item(TableName=env["TABLE_NAME"], Key={"id": item["id"]})
    for counters in (breaker_base._LOCAL_FAILURES, breaker_base._LOCAL_SUCCESSES, breaker_base._LAST_OBSERVED_STATE):
        counters.clear()
    runtime.reset()
    yield env
    runtime.reset()


@pytest.fixture
def make_client(settings_env: dict[str, str]) -> Any:
    """Build a ClaudeClient with setting overrides (lower-case field names)."""

    def build(**overrides: Any) -> ClaudeClient:
        return ClaudeClient(Settings(**overrides))

    return build


@pytest.fixture
def client(make_client: Any) -> ClaudeClient:
    return make_client()


def emf_records(output: str) -> list[dict[str, Any]]:
    """The EMF metric records printed to stdout (Powertools writes one JSON object per line)."""
    records = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


def metric_values(output: str, name: str) -> list[float]:
    values: list[float] = []
    for record in emf_records(output):
        if name in record:
            value = record[name]
            values.extend(value if isinstance(value, list) else [value])
    return values
