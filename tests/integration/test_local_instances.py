"""The local stack's function instances behave as Lambda's: one request at a time per instance,
more instances under concurrency (up to the limit), a crashed or timed-out instance replaced."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from local.instances import FunctionPool, InvocationFailed
from local.lambda_context import LambdaContext

APP = """
import os
import time

busy = False  # module state: shared by every request an instance serves


def handler(event, context):
    global busy
    if busy:
        raise RuntimeError("two requests at once in one instance")
    busy = True
    try:
        if event.get("crash"):
            os._exit(1)
        time.sleep(event.get("sleep", 0.2))
        return {"pid": os.getpid(), "request_id": context.aws_request_id}
    finally:
        busy = False
"""


@pytest.fixture
def pool(tmp_path: Path) -> Any:
    (tmp_path / "app.py").write_text(APP)
    pool = FunctionPool("TestFunction", tmp_path, "handler", timeout=5, max_instances=3).start()
    yield pool
    pool.stop()


def test_concurrent_requests_never_share_an_instance_and_the_pool_stops_at_its_limit(pool: FunctionPool) -> None:
    with ThreadPoolExecutor(8) as threads:
        results = list(threads.map(lambda _: pool({}, LambdaContext("f", 5)), range(8)))

    assert len({r["request_id"] for r in results}) == 8
    assert 2 <= len({r["pid"] for r in results}) <= 3  # grew under load, never past max_instances
    assert pool.instances <= 3


def test_a_crashed_instance_is_replaced(pool: FunctionPool) -> None:
    with pytest.raises(InvocationFailed):
        pool({"crash": True}, LambdaContext("f", 5))
    assert pool({}, LambdaContext("f", 5))["pid"]


def test_an_instance_past_its_timeout_is_replaced(pool: FunctionPool) -> None:
    first = pool({}, LambdaContext("f", 5))["pid"]
    with pytest.raises(InvocationFailed):
        pool({"sleep": 30}, LambdaContext("f", 0.1))  # the pool waits 5 s of grace, then gives up
    assert pool({}, LambdaContext("f", 5))["pid"] != first
