"""The published document is usable as is: the stack serves it, a client generated from it calls a
route, and the answer validates against the document's own response schema. /docs is Swagger UI."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema.validators import Draft202012Validator

from tests.e2e.conftest import ROOT, StackClient

pytestmark = pytest.mark.e2e

Operation = Callable[..., tuple[int, Any]]


def generated_client(document: dict[str, Any], base_url: str, headers: dict[str, str]) -> dict[str, Operation]:
    """A client generated from the document: one function per operationId, path parameters by name."""
    client: dict[str, Operation] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():

            def call(body: Any = None, _m: str = method, _p: str = path, **params: str) -> tuple[int, Any]:
                data = None if body is None else json.dumps(body).encode()
                request = urllib.request.Request(base_url + _p.format(**params), data=data, method=_m.upper())
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    request.add_header(name, value)
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        return response.status, json.loads(response.read())
                except urllib.error.HTTPError as error:
                    return error.code, json.loads(error.read())

            client[operation["operationId"]] = call
    return client


def response_schema(document: dict[str, Any], operation_id: str, status: int) -> Draft202012Validator:
    operation = next(
        o for item in document["paths"].values() for o in item.values() if o["operationId"] == operation_id
    )
    schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


def test_a_client_generated_from_the_served_document_calls_a_route(stack: StackClient, user: str) -> None:
    with urllib.request.urlopen(stack.url + "/openapi.json", timeout=30) as response:
        served = json.loads(response.read())
    assert served == json.loads((ROOT / "openapi.json").read_text())

    api = generated_client(served, stack.url, {"X-User-Id": user})
    status, body = api["classify"]({"text": "The invoice was charged twice.", "labels": ["billing", "bug"]})

    assert status == 200 and body["label"] in ("billing", "bug")
    response_schema(served, "classify", 200).validate(body)
    status, body = api["getJob"](id="00000000-0000-4000-8000-000000000000")
    assert status == 404
    response_schema(served, "getJob", 404).validate(body)


def test_a_classify_job_answers_in_the_documented_shape(stack: StackClient, user: str) -> None:
    served = json.loads((ROOT / "openapi.json").read_text())
    api = generated_client(served, stack.url, {"X-User-Id": user})
    item = {"task": "classify", "input": {"text": "Refund my second charge.", "labels": ["billing", "bug"]}}
    status, body = api["createJobs"]({"items": [item]})
    assert status == 202
    response_schema(served, "createJobs", 202).validate(body)
    job_id = body["jobs"][0]["id"]

    deadline = time.monotonic() + 30
    while (job := api["getJob"](id=job_id)[1])["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)

    assert job["status"] == "succeeded" and job["result"]["label"] in ("billing", "bug")
    response_schema(served, "getJob", 200).validate(job)


def test_docs_is_a_swagger_ui_page_for_the_document(stack: StackClient) -> None:
    with urllib.request.urlopen(stack.url + "/docs", timeout=30) as response:
        assert response.status == 200 and response.headers["content-type"].startswith("text/html")
        page = response.read().decode()
    assert 'url: "/openapi.json"' in page
    for asset in ("/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js"):  # served locally, no CDN
        assert asset in page
        with urllib.request.urlopen(stack.url + asset, timeout=30) as response:
            assert response.status == 200 and len(response.read()) > 1000
