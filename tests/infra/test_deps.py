"""The runtime locks cover what the code imports (local.deps, run by `make scan` in CI)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from local import deps


def test_the_locks_cover_every_runtime_import() -> None:
    assert deps.problems() == []


def test_every_lock_is_hash_pinned() -> None:
    for unit in deps.units():
        if not unit.lock.exists():
            continue
        text = unit.lock.read_text(encoding="utf-8")
        assert deps.pins(unit.lock), unit.lock
        for stanza in re.split(r"\n(?=[a-z])", text.split("\n", 1)[1].strip()):
            assert "==" in stanza and "--hash=sha256:" in stanza, stanza


@pytest.fixture
def copy_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The layer and functions copied, and local.deps pointed at the copy."""
    shutil.copytree(deps.LAYER, tmp_path / "layers" / "claude")
    shutil.copytree(deps.FUNCTIONS, tmp_path / "functions")
    monkeypatch.setattr(deps, "ROOT", tmp_path)
    monkeypatch.setattr(deps, "LAYER", tmp_path / "layers" / "claude")
    monkeypatch.setattr(deps, "FUNCTIONS", tmp_path / "functions")
    return tmp_path


def _drop(lock: Path, package: str) -> None:
    text = lock.read_text(encoding="utf-8")
    cut = re.sub(rf"\n{re.escape(package)}==[^\n]*(\n    [^\n]*)*", "", text)
    assert cut != text
    lock.write_text(cut, encoding="utf-8")


@pytest.mark.parametrize(
    ("package", "complaint"),
    [
        ("aws-xray-sdk", "aws-lambda-powertools requires aws-xray-sdk"),  # an extra's package, never imported
        ("anthropic", "imports 'anthropic'"),  # a direct import
        ("jiter", "anthropic requires jiter"),  # deep in the closure
    ],
)
def test_a_package_deleted_from_the_layer_lock_is_caught(copy_tree: Path, package: str, complaint: str) -> None:
    _drop(copy_tree / "layers" / "claude" / "requirements.txt", package)
    assert any(complaint in problem for problem in deps.problems()), deps.problems()
