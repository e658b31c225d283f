"""One name and one default per option: template parameter `FooBar` -> variable `FOO_BAR` ->
Settings field `foo_bar`, and the parameter's Default is what the field defaults to.

Changing a default, or a name, on one side only fails here."""

from __future__ import annotations

import re
from typing import Any

import pytest

from claudekit.settings import Settings

# Variables read by a library, not by Settings: Powertools' own and the Lambda Web Adapter's.
LIBRARY_ENV = re.compile(r"^(POWERTOOLS_\w+|AWS_LWA_\w+|AWS_LAMBDA_EXEC_WRAPPER)$")
# Settings fields without a default: the template sets them from its resources.
REQUIRED = {"CLAUDE_SECRET_ID": "arn:aws:secretsmanager:us-east-1:123456789012:secret:k", "TABLE_NAME": "t"}


def env_name(parameter: str) -> str:
    """RateLimitPerMinute -> RATE_LIMIT_PER_MINUTE."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", parameter).upper()


def set_variables(template: dict[str, Any]) -> dict[str, Any]:
    """Every variable any function gets, with the value the template gives it."""
    variables = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            variables.update(resource["Properties"].get("Environment", {}).get("Variables", {}))
    return variables


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Settings as a fresh container sees them: nothing but what the test sets."""
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_env_rename_helper() -> None:
    assert env_name("RateLimitPerMinute") == "RATE_LIMIT_PER_MINUTE"
    assert env_name("CacheTtl") == "CACHE_TTL"
    assert env_name("WorkerRecordConcurrency") == "WORKER_RECORD_CONCURRENCY"


def test_every_variable_is_a_settings_field_or_a_library_variable(template: dict[str, Any]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    unknown = {name for name in set_variables(template) if name not in fields and not LIBRARY_ENV.match(name)}
    assert not unknown, f"set by the template but read by nothing: {sorted(unknown)}"


def test_a_parameter_reaches_code_under_its_own_name(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    fields = {name.upper() for name in Settings.model_fields}
    mapped = 0
    for variable, value in set_variables(template).items():
        if isinstance(value, dict) and value.get("Ref") in parameters:
            if LIBRARY_ENV.match(variable) and variable not in fields:
                continue  # e.g. LogLevel -> POWERTOOLS_LOG_LEVEL, read by Powertools
            assert variable == env_name(value["Ref"]), f"{value['Ref']} is passed as {variable}"
            mapped += 1
    assert mapped >= 20, "the template passes (almost) no parameter: the scan is broken"


def test_template_defaults_are_the_settings_defaults(template: dict[str, Any], clean_env: pytest.MonkeyPatch) -> None:
    """Each variable set to its template value (a parameter's Default, or a literal) parses to the
    field's own default: deployed and local (template-driven) and bare Settings() agree."""
    defaults = Settings()  # type: ignore[call-arg]
    parameters = template["Parameters"]
    checked = []
    for variable, value in set_variables(template).items():
        field = variable.lower()
        if field not in Settings.model_fields or variable in REQUIRED:
            continue
        if isinstance(value, dict):
            if value.get("Ref") not in parameters:
                continue  # a resource (queue URL): no default to agree on
            value = parameters[value["Ref"]]["Default"]
        clean_env.setenv(variable, str(value))
        from_template = Settings()  # type: ignore[call-arg]
        clean_env.delenv(variable)
        assert getattr(from_template, field) == getattr(defaults, field), (
            f"{variable}: template {value!r}, Settings default {getattr(defaults, field)!r}"
        )
        checked.append(variable)
    assert {"RATE_LIMIT_PER_MINUTE", "WORKER_RECORD_CONCURRENCY", "REQUEST_BUDGET_SECONDS", "PLANS"} <= set(checked)


def test_the_worker_knobs_are_settings(clean_env: pytest.MonkeyPatch) -> None:
    """What the worker reads comes from the environment like every other option."""
    clean_env.setenv("JOB_RETRY_BASE_SECONDS", "3")
    clean_env.setenv("BATCH_MAX_AGE_SECONDS", "7200")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.job_retry_base_seconds == 3.0
    assert settings.batch_max_age_seconds == 7200
    assert settings.job_max_deferrals == 60
    assert settings.job_ttl_seconds == 7 * 86_400
