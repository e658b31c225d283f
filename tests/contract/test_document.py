"""The committed OpenAPI document is what the code generates, and a valid OpenAPI 3.1 document."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jsonschema.validators import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "layers" / "claude" / "claudekit" / "http" / "openapi.json"
CLAUDE_ERRORS = {"400", "401", "409", "413", "422", "429", "500", "502", "503", "504"}


def document() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(DOCUMENT.read_text())
    return loaded


def test_the_committed_document_matches_the_code() -> None:
    # A subprocess: generating imports every function with placeholder settings.
    run = subprocess.run(
        [sys.executable, "-m", "local.openapi", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr


def test_the_root_openapi_json_is_the_committed_document() -> None:
    assert (ROOT / "openapi.json").read_text() == DOCUMENT.read_text()


def test_every_route_in_the_template_is_described_with_its_errors() -> None:
    doc: dict[str, object] = document()
    paths: dict[str, dict[str, dict[str, dict[str, dict[str, object]]]]] = doc["paths"]  # type: ignore[assignment]
    assert {(m, p) for p, item in paths.items() for m in item} >= {
        ("post", "/generate"),
        ("post", "/classify"),
        ("post", "/ideas"),
        ("post", "/stream"),
        ("post", "/jobs"),
        ("get", "/jobs/{id}"),
        ("get", "/usage"),
        ("get", "/openapi.json"),
    }
    for path in ("/generate", "/classify", "/ideas", "/stream", "/jobs"):
        responses = paths[path]["post"]["responses"]
        assert set(responses) >= CLAUDE_ERRORS
        for code in CLAUDE_ERRORS:
            assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
            assert responses[code]["headers"]["X-Request-Id"]["required"] is True
        assert "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
        assert "RateLimit-Remaining" in responses["429"]["headers"]
    assert "404" in paths["/jobs/{id}"]["get"]["responses"]
    assert set(paths["/stream"]["post"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert paths["/openapi.json"]["get"]["security"] == []
    assert doc["security"] == [{"cognito": []}]


def test_the_document_is_valid_openapi_3_1() -> None:
    from schemathesis.specs.openapi import definitions  # the 3.1 meta-schema schemathesis ships

    doc = document()
    assert doc["openapi"] == "3.1.0"
    Draft202012Validator(definitions.OPENAPI_31).validate(doc)


def test_a_route_that_declares_no_errors_gets_every_error_it_can_answer() -> None:
    from local.openapi import _default_errors, _tidy

    powertools = {"$ref": "#/components/schemas/HTTPValidationError"}
    operation = {
        "requestBody": {},
        "responses": {
            "200": {"description": "ok"},
            "422": {"description": "Validation Error", "content": {"application/json": {"schema": powertools}}},
        },
    }
    schemas: dict[str, object] = {}
    _default_errors(operation, "/conversations/{id}", schemas)
    _tidy(operation)

    responses = operation["responses"]
    assert set(responses) == {"200", "404", *CLAUDE_ERRORS}
    assert responses["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
    assert "ErrorOut" in schemas and "X-Request-Id" in responses["200"]["headers"]
