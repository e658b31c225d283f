"""Each REST function invoked with its events/*.json (what `sam local invoke -e` would send)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from local.instances import load_module
from local.lambda_context import LambdaContext
from local.shim import ROOT
from local.simulator import Simulator

CASES = [
    ("generate", "generate.json", {"text", "model", "stop_reason", "truncated", "usage", "cost_usd", "request_id"}),
    ("classify", "classify.json", {"label", "model", "usage", "cost_usd"}),
    ("ideas", "ideas.json", {"ideas", "model", "usage", "cost_usd"}),
    (
        "generate",
        "usage.json",
        {
            "date",
            "requests",
            "usage",
            "cost_usd",
            "without_caching_usd",
            "without_routing_usd",
            "features",
            "plan",
            "plan_overridden",
            "limits",
            "remaining",
        },
    ),
]


@pytest.mark.parametrize(("function", "event_file", "keys"), CASES)
def test_handler_answers_its_event(
    settings_env: dict[str, str], sim: Simulator, function: str, event_file: str, keys: set[str]
) -> None:
    module = load_module(ROOT / "functions" / function / "app.py", f"event_test_{function}")
    event: dict[str, Any] = json.loads(Path(ROOT / "events" / event_file).read_text())

    result = module.handler(event, LambdaContext(function, timeout=30))

    assert result["statusCode"] == 200, result["body"]
    body = json.loads(result["body"])
    assert set(body) == keys
    headers = {k: v[0] for k, v in (result.get("multiValueHeaders") or {}).items()} | (result.get("headers") or {})
    assert headers["X-Request-Id"] == event["requestContext"]["requestId"]
    # CORS for the configured origin (the template's CorsAllowOrigin), so a page there can read it.
    assert headers["Access-Control-Allow-Origin"] == settings_env["CORS_ALLOW_ORIGIN"]
    assert "X-Request-Id" in headers["Access-Control-Expose-Headers"]
    if function == "classify":
        assert body["label"] in json.loads(event["body"])["labels"]
    if event_file != "usage.json":
        assert len(sim.message_requests()) == 1


def test_missing_identity_is_401(settings_env: dict[str, str]) -> None:
    """Deployed, the authorizer guarantees a sub; a handler reached without one refuses (never guesses)."""
    module = load_module(ROOT / "functions" / "generate" / "app.py", "no_identity_generate")
    event = json.loads((ROOT / "events" / "generate.json").read_text())
    event["requestContext"]["authorizer"] = {}
    result = module.handler(event, LambdaContext("generate", 30))
    assert result["statusCode"] == 401
    assert json.loads(result["body"])["error"]["code"] == "UNAUTHORIZED"
