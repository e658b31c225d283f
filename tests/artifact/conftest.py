"""The built artifact, started as Lambda starts it (`make smoke`; CI runs it after `sam build`).

SMOKE_BUILD_DIR names the `sam build` output (built for this machine's CPU) and SMOKE_PYTHON the
Python 3.13 interpreter; without them these tests skip, so a plain `pytest` stays source-only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from local import aws
from local.artifact import Artifact, runtime_python
from local.simulator import Simulator


@pytest.fixture(scope="session")
def artifact() -> Artifact:
    build = os.environ.get("SMOKE_BUILD_DIR")
    if not build:
        pytest.skip("SMOKE_BUILD_DIR is not set: run `make smoke`")
    root = Path(build).resolve()
    assert (root / "template.yaml").is_file(), f"{root} is not a sam build output"
    return Artifact(root)


@pytest.fixture(scope="session")
def python(artifact: Artifact) -> Path:
    interpreter = os.environ.get("SMOKE_PYTHON")
    assert interpreter, "SMOKE_PYTHON must name a Python 3.13 interpreter"
    return runtime_python(interpreter, artifact.root.parent / f"{artifact.root.name}-runtime")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "function.log"
    path.touch()
    return path


@pytest.fixture
def env_for(artifact: Artifact, local_aws: aws.LocalAws, sim: Simulator, python: Path):  # type: ignore[no-untyped-def]
    def build(function: str) -> dict[str, str]:
        return artifact.environment(function, local_aws, sim.url, python)

    return build
