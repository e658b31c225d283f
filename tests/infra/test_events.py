"""events/*.json: `sam local invoke` inputs shaped as API Gateway and SQS send them."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cfn_tools import load_yaml

ROOT = Path(__file__).resolve().parents[2]
API_EVENTS = {
    "generate.json": ("POST", "/generate"),
    "classify.json": ("POST", "/classify"),
    "ideas.json": ("POST", "/ideas"),
    "stream.json": ("POST", "/stream"),
    "jobs-post.json": ("POST", "/jobs"),
    "jobs-get.json": ("GET", "/jobs/{id}"),
    "usage.json": ("GET", "/usage"),
    "admin-usage.json": ("GET", "/admin/usage"),
    "conversations-post.json": ("POST", "/conversations"),
    "conversations-messages.json": ("POST", "/conversations/{id}/messages"),
    "conversations-get.json": ("GET", "/conversations/{id}"),
    "conversations-stream.json": ("POST", "/conversations/{id}/stream"),
}


def load(name: str) -> Any:
    return json.loads((ROOT / "events" / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(("name", "route"), sorted(API_EVENTS.items()))
def test_api_event_matches_its_route(name: str, route: tuple[str, str]) -> None:
    event = load(name)
    method, resource = route
    assert (event["httpMethod"], event["resource"]) == route
    assert event["requestContext"]["resourcePath"] == resource
    assert event["requestContext"]["httpMethod"] == method
    assert event["requestContext"]["stage"] == "v1"
    assert event["isBase64Encoded"] is False
    claims = event["requestContext"]["authorizer"]["claims"]
    uuid.UUID(claims["sub"])
    assert "@" in claims["email"]
    if method == "POST":
        assert isinstance(json.loads(event["body"]), dict)
    else:
        assert event["body"] is None
    if "{id}" in resource:
        assert event["path"] == resource.replace("{id}", event["pathParameters"]["id"])
    else:
        assert event["path"] == resource


def test_bodies_follow_the_contract() -> None:
    assert "prompt" in json.loads(load("generate.json")["body"])
    classify = json.loads(load("classify.json")["body"])
    assert classify["labels"]
    assert len(set(classify["labels"])) == len(classify["labels"])
    assert 1 <= json.loads(load("ideas.json")["body"])["count"] <= 10
    items = json.loads(load("jobs-post.json")["body"])["items"]
    assert items
    assert all({"task", "input"} <= item.keys() for item in items)


def test_worker_event_carries_a_job_message() -> None:
    (record,) = load("worker.json")["Records"]
    assert record["eventSource"] == "aws:sqs"
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    message = json.loads(record["body"])
    assert {"job_id", "user", "task", "input"} <= message.keys()


def test_env_vars_file_overrides_what_sam_local_cannot_resolve(root: Path) -> None:
    """`sam local invoke --env-vars events/env.json`: under sam local a Ref to a resource resolves to
    its logical id, so each such variable needs a real value; and sam local ignores any variable the
    template does not declare, so the file may name no other."""
    template = load_yaml((root / "template.yaml").read_text(encoding="utf-8"))
    declared = template["Globals"]["Function"]["Environment"]["Variables"]
    resources = set(template["Resources"])
    refers_to_resource = {
        name
        for name, value in declared.items()
        if isinstance(value, dict) and str(value.get("Ref", value.get("Fn::GetAtt", [""])[0])) in resources
    }
    overrides = load("env.json")["Parameters"]
    assert refers_to_resource == {"CLAUDE_SECRET_ID", "TABLE_NAME", "JOBS_QUEUE_URL"}
    assert set(overrides) == refers_to_resource
