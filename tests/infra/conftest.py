"""Shared fixtures for assertions on template.yaml (parsed with cfn-flip, which knows the short tags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cfn_tools import load_yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_yaml((ROOT / "template.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


@pytest.fixture(scope="session")
def functions(resources: dict[str, Any]) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}


@pytest.fixture(scope="session")
def global_function(template: dict[str, Any]) -> dict[str, Any]:
    return template.get("Globals", {}).get("Function", {})
