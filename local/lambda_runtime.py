"""A stand-in for the Lambda Python runtime's bootstrap, for starting the built artifact without Docker.

Run by a clean Python 3.13 (standard library only: it must not need anything the artifact lacks),
with the function's build folder as the working directory and ``PYTHONPATH=<task root>:<layer
python/>``, so imports resolve in Lambda's order (/var/task, then /opt/python, then the runtime's
boto3). It imports the handler once (the init phase, timed), then invokes it once per line of JSON
on stdin, as Lambda sends one event at a time to an environment, and answers one JSON line per
event on the stdout it was given. Whatever the function prints (its logs) goes to stderr.

Protocol: first line out ``{"init_ms": float, "rss_mb": float}`` or ``{"init_error": str}``; then per event in,
``{"result": ...}`` or ``{"error": str}``.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
import traceback
import uuid
from typing import Any

FUNCTION_NAME = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")


class Context:
    """The fields of Lambda's context object the code (and Powertools) read."""

    def __init__(self, timeout_s: float) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = FUNCTION_NAME
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"))
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"
        self.log_group_name = f"/aws/lambda/{FUNCTION_NAME}"
        self.log_stream_name = "smoke"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the function's own output is its log, as Lambda captures it
    sys.stdout = sys.stderr
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    timeout = float(os.environ.get("SMOKE_TIMEOUT_SECONDS", "30"))
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception:
        protocol.write(json.dumps({"init_error": traceback.format_exc()}) + "\n")
        return 1
    init_ms = (time.perf_counter() - started) * 1000
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    protocol.write(json.dumps({"init_ms": init_ms, "rss_mb": rss_mb}) + "\n")
    for line in sys.stdin:
        event: Any = json.loads(line)
        # Lambda sets a fresh trace header for every invocation; not sampled, so nothing is sent.
        os.environ["_X_AMZN_TRACE_ID"] = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"
        try:
            answer = {"result": handler(event, Context(timeout))}
        except Exception:
            answer = {"error": traceback.format_exc()}
        protocol.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
