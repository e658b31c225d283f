"""Lambda's context object, as every local invocation gets it: the shim, the SQS source, the
function pools, tests and benchmarks. (`local/lambda_runtime.py`, the stand-in for Lambda's
bootstrap in a clean runtime, keeps its own copy: it may import nothing from this repository.)"""

from __future__ import annotations

import time
import uuid

ACCOUNT = "123456789012"
REGION = "us-east-1"


class LambdaContext:
    """What a handler (and Powertools) may read from its context, with a real countdown to the timeout."""

    def __init__(self, function_name: str, timeout: float = 30.0, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
