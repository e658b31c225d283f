"""What the layer costs: cold import, per-request overhead over the raw SDK, memory over many calls.

Run with `make bench` (all entries) or `python -m benchmarks.client`. Numbers are measured, never
asserted in tests. The simulator answers instantly, so the overhead is ours: validation, ledger
and breaker round trips to DynamoDB (moto on loopback here; single-digit ms in AWS), metrics, logs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import anthropic

from benchmarks.env import BENCH_KEY, bench_environment
from local.shim import ROOT, LambdaContext, load_module
from local.simulator import Simulator

REQUESTS = 200
MEMORY_REQUESTS = 1000


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cold_import_ms(runs: int = 5, *, bytecode: bool = True) -> float:
    """Median wall time of a fresh interpreter importing the generate handler (the init phase).

    Without bytecode every module is compiled on import, as in a layer shipped without .pyc files
    (Lambda's /opt is read-only, so that happens on every cold start).
    """
    code = "import time; t=time.perf_counter(); import app; print((time.perf_counter()-t)*1000)"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'claude'}", "CLAUDE_SECRET_ID": "x", "TABLE_NAME": "x"}
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # import builds the client, as Lambda's init does
    samples = []
    for _ in range(runs):
        if not bytecode:
            empty = tempfile.mkdtemp()
            env.update(PYTHONPYCACHEPREFIX=empty, PYTHONDONTWRITEBYTECODE="1")
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT / "functions" / "generate", env=env, capture_output=True, text=True
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def _event(prompt: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((ROOT / "events" / "generate.json").read_text())
    event["body"] = json.dumps({"prompt": prompt, "max_tokens": 200})
    return event


def run() -> dict[str, Any]:
    results: dict[str, Any] = {
        "cold_import_ms": round(cold_import_ms(), 1),
        "cold_import_no_pyc_ms": round(cold_import_ms(3, bytecode=False), 1),
    }
    with Simulator(api_key=BENCH_KEY).start() as sim, bench_environment(sim):
        sdk = anthropic.Anthropic(base_url=sim.url, api_key=BENCH_KEY, max_retries=0)
        raw: list[float] = []
        for i in range(REQUESTS):
            started = time.perf_counter()
            sdk.messages.create(
                model="claude-sonnet-5-5",
                max_tokens=200,
                messages=[{"role": "user", "content": f"Bench prompt {i}"}],
            )
            raw.append((time.perf_counter() - started) * 1000)

        module = load_module(ROOT / "functions" / "generate" / "app.py", "bench_generate")
        handled: list[float] = []
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):  # logs and EMF lines are the function's stdout
            for i in range(REQUESTS):
                started = time.perf_counter()
                result = module.handler(_event(f"Bench prompt {i}"), LambdaContext("generate", 30))
                handled.append((time.perf_counter() - started) * 1000)
                assert result["statusCode"] == 200, result
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            for i in range(MEMORY_REQUESTS):
                module.handler(_event(f"Memory prompt {i}"), LambdaContext("generate", 30))
                sink.seek(0)
                sink.truncate()
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results.update(
        {
            "requests": REQUESTS,
            "raw_sdk_p50_ms": round(statistics.median(raw), 2),
            "handler_p50_ms": round(statistics.median(handled), 2),
            "handler_p95_ms": round(_percentile(handled, 95), 2),
            "overhead_p50_ms": round(statistics.median(handled) - statistics.median(raw), 2),
            "memory_requests": MEMORY_REQUESTS,
            "max_rss_mb_before": round(rss_before / 1024, 1),
            "max_rss_mb_after": round(rss_after / 1024, 1),
        }
    )
    return results


def main() -> None:
    results = run()
    for key, value in results.items():
        print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
