"""The API key from Secrets Manager (moto over HTTP): shapes accepted, and clear failures."""

from __future__ import annotations

from typing import Any

import pytest

from claudekit import errors
from claudekit.claude.request import ClaudeRequest
from claudekit.claude.secret import get_api_key
from claudekit.deadline import Deadline
from local.aws import LocalAws
from local.simulator import Simulator


def request() -> ClaudeRequest:
    return ClaudeRequest(feature="generate", task="generate", user_id="u", prompt="Hello")


def test_a_bare_string_secret_is_the_key(local_aws: LocalAws, settings_env: dict[str, str]) -> None:
    sm = local_aws.client("secretsmanager")
    arn = sm.create_secret(Name="bare-key-secret", SecretString="  sk-bare  ")["ARN"]
    assert get_api_key(arn, max_age=0) == "sk-bare"


@pytest.mark.parametrize("value", ['{"not_the_key": "x"}', '{"api_key": ""}', "   "])
def test_a_secret_without_a_key_is_a_configuration_error(
    local_aws: LocalAws, settings_env: dict[str, str], value: str
) -> None:
    sm = local_aws.client("secretsmanager")
    arn = sm.create_secret(Name=f"empty-{abs(hash(value))}", SecretString=value)["ARN"]
    with pytest.raises(errors.ConfigurationError) as caught:
        get_api_key(arn, max_age=0)
    assert "empty-" not in caught.value.message and "arn:" not in caught.value.message


def test_a_missing_secret_fails_clearly_and_calls_nothing(
    make_client: Any, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(claude_secret_id="arn:aws:secretsmanager:us-east-1:123456789012:secret:nope")
    with pytest.raises(errors.ConfigurationError) as caught:
        client.complete(request(), Deadline.after(10))
    assert caught.value.status == 500
    # The caller learns nothing about our resources; the operator's log names the variable only.
    assert "123456789012" not in caught.value.message and "nope" not in caught.value.message
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "CLAUDE_SECRET_ID" in logged and "123456789012" not in logged and "secret:nope" not in logged
    assert sim.message_requests() == []
