"""Cold start: what a handler imports beyond the floor `import anthropic, boto3` (issue 15).

Each function imports only what it uses; every module is init time on a Lambda's fraction of a
core. Counted in a fresh interpreter (this venv, not the artifact: `make bench` measures that one),
so a new heavy import fails here rather than only moving a benchmark figure. Counts, never times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# /generate imported 311 modules beyond the floor before Powertools idempotency was made lazy, 298
# after, 191 once pydantic-settings left and X-Ray and the parameters utility waited for the first
# request; the margin leaves room for small additions, not for another utility package.
MAX_BEYOND_FLOOR = 200
# What no function's init imports: Powertools idempotency (built when a request carries a key), the
# parameters utility (the first key read), aws_xray_sdk (the first traced invocation).
LAZY = ("aws_lambda_powertools.utilities.idempotency", "aws_lambda_powertools.utilities.parameters", "aws_xray_sdk")
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())

CHILD = """
import json, sys
import anthropic, boto3
floor = set(sys.modules)
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - floor)))
"""


def beyond_floor(module: str) -> list[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "ANTHROPIC_"))},
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers" / "claude")]),
        "CLAUDE_SECRET_ID": "claude-kit/anthropic",
        "TABLE_NAME": "claude-kit-state",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "claude-kit",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, module], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


def test_generate_imports_at_most_the_budget_beyond_the_floor() -> None:
    modules = beyond_floor("functions.generate.app")
    assert len(modules) <= MAX_BEYOND_FLOOR, f"{len(modules)} modules beyond the floor"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_what_only_a_request_needs_is_imported_by_none_at_init(function: str) -> None:
    modules = beyond_floor(f"functions.{function}.app")
    assert len(FUNCTIONS) == 7
    assert not [m for m in modules if m.startswith(LAZY)]
    assert not [m for m in modules if m.startswith("pydantic_settings")]  # Settings reads the environment itself


def test_the_error_map_knows_every_job_task_without_importing_the_jobs_models() -> None:
    from typing import get_args

    from claudekit.http import errors
    from claudekit.tasks.jobs.models import JobTask

    assert frozenset(get_args(JobTask)) == errors._JOB_TASKS
