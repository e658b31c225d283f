"""The environment every benchmark runs in: moto from the template, a simulator, quiet generous settings.

Benchmarks measure our code, not the limits: rate limits and budgets are set out of reach, tracing
is off (no X-Ray daemon), and per-call INFO logs are silenced so they do not drown the table.
The process environment is restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LAYER = str(Path(__file__).resolve().parent.parent / "layers" / "claude")
if LAYER not in sys.path:  # the layer is on the path in Lambda and under pytest; not under `python -m`
    sys.path.insert(0, LAYER)


from claudekit import runtime  # noqa: E402
from claudekit.telemetry import logger  # noqa: E402
from local import aws  # noqa: E402
from local.simulator import Simulator  # noqa: E402

BENCH_KEY = "sk-bench"


@contextlib.contextmanager
def bench_environment(sim: Simulator, *, moto_process: bool = False, **extra: str) -> Iterator[aws.LocalAws]:
    """Point the functions' settings at `sim` and at moto (`moto_process`: in a process of its
    own); yield the local AWS resources."""
    saved_env, saved_level = dict(os.environ), logger.log_level
    local = aws.start(api_key=BENCH_KEY, own_process=moto_process)
    try:
        os.environ.update(local.environment)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": local.endpoint,
                "ANTHROPIC_BASE_URL": sim.url,
                "RATE_LIMIT_PER_MINUTE": "100000",
                "DAILY_BUDGET_USD": "1000",
                "BREAKER_FAILURE_THRESHOLD": "1000",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                **extra,
            }
        )
        logger.setLevel("WARNING")
        runtime.reset()
        yield local
    finally:
        logger.setLevel(saved_level)
        os.environ.clear()
        os.environ.update(saved_env)
        runtime.reset()
        local.stop()
