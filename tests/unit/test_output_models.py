"""Structured-output models and schemas are built once per label set / count, and shared safely."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from claudekit.claude.request import output_schema
from claudekit.tasks.classify import ClassifyBody, classify_request
from claudekit.tasks.ideas import IdeasBody, ideas_request


def test_one_output_model_per_label_set_in_its_order() -> None:
    _, first = classify_request(ClassifyBody(text="t", labels=["a", "b"]), "u")
    _, again = classify_request(ClassifyBody(text="other", labels=["a", "b"]), "v")
    _, other = classify_request(ClassifyBody(text="t", labels=["b", "a"]), "u")
    assert first is again
    assert other is not first
    assert output_schema(other)["properties"]["label"]["enum"] == ["b", "a"]


def test_one_output_model_per_count() -> None:
    _, three = ideas_request(IdeasBody(topic="x", count=3), "u")
    assert ideas_request(IdeasBody(topic="y", count=3), "v")[1] is three
    two = ideas_request(IdeasBody(topic="x", count=2), "u")[1]
    idea = {"title": "t", "excerpt": "e", "target_audience": "a"}
    assert two is not three
    two.model_validate({"ideas": [idea, idea]})
    with pytest.raises(ValidationError):
        two.model_validate({"ideas": [idea, idea, idea]})


def test_each_caller_gets_its_own_copy_of_a_cached_schema() -> None:
    _, model = classify_request(ClassifyBody(text="t", labels=["yes", "no"]), "u")
    mine = output_schema(model)
    mine["properties"]["label"]["enum"].append("maybe")
    assert output_schema(model)["properties"]["label"]["enum"] == ["yes", "no"]
