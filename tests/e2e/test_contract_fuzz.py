"""Contract fuzzing: schemathesis generates requests from the committed OpenAPI document and sends
them to the local stack; every answer must be a status the document lists for that operation, with
its content type, its headers and a body matching its schema; never a 5xx.

Bounded for CI: a fixed number of examples per operation, derandomized (the same requests every
run, so a failure reproduces). CONTRACT_EXAMPLES explores further. Each request is a fresh
caller, so the stack's small test limits answer 200 as often as 429.
"""

from __future__ import annotations

import os
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import ROOT, StackClient

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "8"))
schema = schemathesis.openapi.from_path(ROOT / "layers" / "claude" / "claudekit" / "http" / "openapi.json")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_the_stack_keeps_its_published_contract(case: schemathesis.Case, stack: StackClient) -> None:
    case.call_and_validate(base_url=stack.url, headers={"X-User-Id": f"contract-{uuid.uuid4()}"}, checks=CHECKS)
