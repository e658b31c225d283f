"""The Tracer costs the init phase nothing: a traced handler builds it on its first invocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from claudekit import telemetry
handler = telemetry.traced(lambda event, context: {"echo": event})
seen = {"decorated": "aws_xray_sdk" in sys.modules}
seen["answer"] = handler({"n": 1}, None)
seen["invoked"] = "aws_xray_sdk" in sys.modules
from aws_xray_sdk.core import patcher
seen["patched"] = sorted(patcher._PATCHED_MODULES)
seen["sqlite3"] = "sqlite3" in sys.modules
print(json.dumps(seen))
"""


def test_a_traced_handler_imports_xray_on_its_first_invocation_not_before() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "layers" / "claude"),
        "POWERTOOLS_SERVICE_NAME": "claude-kit",
        "LAMBDA_TASK_ROOT": str(ROOT),  # as in Lambda: tracing on, so the Tracer patches
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    }
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["decorated"] is False
    assert seen["answer"] == {"echo": {"n": 1}}
    assert seen["invoked"] is True
    # What patch_all would patch here, less sqlite3, which nothing of ours uses.
    assert seen["patched"] == ["botocore"] and seen["sqlite3"] is False
