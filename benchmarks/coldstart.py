"""Cold start of the built artifact: each handler's init beside the floor `import anthropic, boto3`.

Measured on what ships: the `sam build` output for this machine's CPU (`make smoke` builds it), in
a clean Python 3.13 with only boto3 besides, exactly as tests/artifact starts it. For each function
a fresh interpreter imports the handler (Lambda's init phase; the stream function's ASGI app) and
reports the wall time of that import and its peak RSS; the floor is the same interpreter importing
only the SDK and boto3 from the same layer. Medians of RUNS, side by side in one run, so the ratio
holds even when the machine is busy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from local import aws
from local.artifact import Artifact, Invoker, runtime_python
from local.simulator import Simulator

RUNS = 7
ROOT = Path(__file__).resolve().parent.parent
FLOOR = (
    "import json, resource, time\n"
    "started = time.perf_counter()\n"
    "import anthropic, boto3\n"
    "print(json.dumps({'init_ms': (time.perf_counter() - started) * 1000,"
    " 'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
)


def build_dir() -> Path:
    arch = {"aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return Path(os.environ.get("SMOKE_BUILD_DIR", ROOT / ".aws-sam" / f"build-{arch}")).resolve()


def python313() -> str:
    found = subprocess.run(
        ["pyenv", "which", "python3.13"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYENV_VERSION": os.environ.get("SAM_PYTHON", "3.13.0")},
        check=False,
    ).stdout.strip()
    return os.environ.get("SMOKE_PYTHON") or found or "python3.13"


def _median(samples: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(s[key] for s in samples), 1)


def run() -> dict[str, Any]:
    root = build_dir()
    if not (root / "template.yaml").exists():
        return {"skipped": f"no build at {root}: run `make smoke` first"}
    artifact = Artifact(root)
    python = runtime_python(python313(), root.parent / f"{root.name}-runtime")
    local = aws.start(api_key="sk-bench")
    sim = Simulator(api_key="sk-bench").start()
    try:
        floor_env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(artifact.layer_python()),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        envs = {}
        for function in sorted(artifact.functions):
            env = artifact.environment(function, local, sim.url, python)
            if env["_HANDLER"].endswith(".sh"):  # behind the web adapter: time the ASGI app's import
                env["_HANDLER"] = "app.app"
            envs[function] = env
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in ["floor", *envs]}
        # Round robin, so a busy moment of the machine slows the floor and the handlers alike.
        for _ in range(RUNS):
            floor = subprocess.run(
                [str(python), "-c", FLOOR], env=floor_env, capture_output=True, text=True, check=True
            )
            samples["floor"].append(json.loads(floor.stdout))
            for function, env in envs.items():
                with open(os.devnull, "w") as log:
                    invoker = Invoker(python, env, artifact.task_root(function), log)
                    invoker.close()
                if "init_error" in invoker.init:
                    raise RuntimeError(f"{function} failed its init:\n{invoker.init['init_error']}")
                samples[function].append(invoker.init)
        floor_ms = statistics.median(s["init_ms"] for s in samples["floor"])
        results: dict[str, Any] = {
            "floor: import anthropic, boto3": f"{floor_ms:.0f} ms, {_median(samples['floor'], 'rss_mb')} MB"
        }
        worst = 0.0
        for function in envs:
            ratio = statistics.median(s["init_ms"] for s in samples[function]) / floor_ms
            worst = max(worst, ratio)
            results[f"{function} init"] = (
                f"{_median(samples[function], 'init_ms'):.0f} ms, {_median(samples[function], 'rss_mb')} MB, "
                f"{ratio:.2f}x floor"
            )
        results["worst ratio to the floor"] = round(worst, 2)
        results["artifact"] = str(root.relative_to(ROOT)) if root.is_relative_to(ROOT) else str(root)
        return results
    finally:
        sim.stop()
        local.stop()


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:40} {value}")
    sys.exit(0)
