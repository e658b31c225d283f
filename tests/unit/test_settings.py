"""Configuration fails at init, naming the variable; routing follows configuration."""

from __future__ import annotations

import pytest

from claudekit.claude.routing import max_tokens_for, model_for
from claudekit.errors import ConfigurationError, InvalidRequest
from claudekit.settings import Settings, load_settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("CLAUDE_SECRET_ID", "arn:secret")
    monkeypatch.setenv("TABLE_NAME", "state")
    return monkeypatch


def test_missing_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDE_SECRET_ID", raising=False)
    monkeypatch.delenv("TABLE_NAME", raising=False)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "CLAUDE_SECRET_ID" in str(caught.value)
    assert "TABLE_NAME" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAX_TOKENS_CEILING", "lots"), ("CACHE_TTL", "2h"), ("RETRY_MAX_ATTEMPTS", "0"), ("DAILY_BUDGET_USD", "-1")],
)
def test_bad_values_are_named(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


def test_routing_by_task_and_tier(env: pytest.MonkeyPatch) -> None:
    env.setenv("MODEL_DEEP", "claude-opus-4-1")
    env.setenv("TASK_TIERS", '{"summarize": "deep"}')
    settings = load_settings()
    assert model_for("classify", settings) == "claude-haiku-5-5"
    assert model_for("generate", settings) == "claude-sonnet-5-5"
    assert model_for("reason", settings) == "claude-opus-4-1"
    assert model_for("summarize", settings) == "claude-opus-4-1"
    with pytest.raises(InvalidRequest):
        model_for("dance", settings)


def test_max_tokens_default_per_task_and_ceiling(env: pytest.MonkeyPatch) -> None:
    settings = Settings(max_tokens_ceiling=1000)  # type: ignore[call-arg]
    assert max_tokens_for("classify", None, settings) == 64
    assert max_tokens_for("reason", None, settings) == 1000  # default 4096, capped
    assert max_tokens_for("generate", 300, settings) == 300
    with pytest.raises(InvalidRequest):
        max_tokens_for("generate", 1001, settings)


@pytest.mark.parametrize("name", ["PLANS", "TASK_TIERS"])
def test_a_json_variable_that_is_not_json_is_named(env: pytest.MonkeyPatch, name: str) -> None:
    env.setenv(name, "not json")
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


def test_variables_are_read_in_any_case_and_arguments_win(env: pytest.MonkeyPatch) -> None:
    env.setenv("max_tokens_ceiling", "300")
    env.setenv("PLANS", '{"free": {"requests_per_minute": 5, "daily_budget_usd": 0.1}}')
    settings = load_settings()
    assert settings.max_tokens_ceiling == 300
    assert settings.plans["free"].requests_per_minute == 5
    assert Settings(max_tokens_ceiling=1000).max_tokens_ceiling == 1000  # type: ignore[call-arg]
    assert Settings(table_name="other").table_name == "other"  # type: ignore[call-arg]
