"""Cold start of the built artifact: each handler's init beside the floor `import anthropic, boto3`.

Measured on what ships: the `sam build` output for this machine's CPU (`make smoke-build` builds it),
in a clean Python 3.13 with only what the Lambda runtime ships, with each function's environment as
tests/artifact starts it. A fresh interpreter runs benchmarks/init_child.py, which imports the
handler (Lambda's init phase; the stream function's ASGI app) and reports the import's wall time,
peak RSS and number of modules; the floor is the same interpreter, environment and path importing
only the SDK and boto3. Each handler is measured twice: as is, and with the garbage collector
disabled during init (BENCH_GC=off in the child), so what collections cost the init is reported.
The child also reports its CPU time, a steadier ratio when other work shares the machine.
Medians of RUNS, interleaved (floor, then every handler, RUNS times), so a busy moment of the
machine slows the floor and the handlers alike and the ratio holds.
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
from local.artifact import Artifact, runtime_python
from local.simulator import Simulator

RUNS = int(os.environ.get("COLDSTART_RUNS", "3"))  # more on a busy machine: COLDSTART_RUNS=5
ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "init_child.py"
TARGET = 1.10  # issue 15: every handler's init <= 1.10x the floor


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
    return statistics.median(s[key] for s in samples)


def _init(python: Path, env: dict[str, str], cwd: Path) -> dict[str, float]:
    done = subprocess.run([str(python), str(CHILD)], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"init of {env['_HANDLER']} in {cwd.name} failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(runs: int = RUNS) -> dict[str, Any]:
    root = build_dir()
    if not (root / "template.yaml").exists():
        return {"skipped": f"no build at {root}: run `make smoke-build` first"}
    artifact = Artifact(root)
    python = runtime_python(python313(), root.parent / f"{root.name}-runtime")
    local = aws.start(api_key="sk-bench")
    sim = Simulator(api_key="sk-bench").start()
    try:
        envs: dict[str, dict[str, str]] = {}
        for function in sorted(artifact.functions):
            env = artifact.environment(function, local, sim.url, python)
            if env["_HANDLER"].endswith(".sh"):  # behind the web adapter: time the ASGI app's import
                env["_HANDLER"] = "app.app"
            envs[function] = env
        first = next(iter(envs))
        floor_env = {**envs[first], "_HANDLER": "floor"}  # the same interpreter, variables and path
        samples: dict[str, list[dict[str, float]]] = {"floor": []}
        for _ in range(runs):
            samples["floor"].append(_init(python, floor_env, artifact.task_root(first)))
            for function, env in envs.items():
                cwd = artifact.task_root(function)
                samples.setdefault(function, []).append(_init(python, env, cwd))
                samples.setdefault(f"{function} gc off", []).append(_init(python, {**env, "BENCH_GC": "off"}, cwd))
        floor_ms = _median(samples["floor"], "init_ms")
        floor_cpu = _median(samples["floor"], "cpu_ms")
        floor_mb = _median(samples["floor"], "rss_mb")
        floor_modules = _median(samples["floor"], "modules")
        handlers: dict[str, Any] = {}
        for function in envs:
            ms = _median(samples[function], "init_ms")
            gc_off_ms = _median(samples[f"{function} gc off"], "init_ms")
            cpu = _median(samples[function], "cpu_ms")
            gc_off_cpu = _median(samples[f"{function} gc off"], "cpu_ms")
            handlers[function] = {
                "init_ms": round(ms),
                "ratio": round(ms / floor_ms, 2),
                "cpu_ratio": round(cpu / floor_cpu, 2),
                "rss_delta_mb": round(_median(samples[function], "rss_mb") - floor_mb, 1),
                "modules_beyond_floor": round(_median(samples[function], "modules") - floor_modules),
                "init_ms_gc_off": round(gc_off_ms),
                "ratio_gc_off": round(gc_off_ms / floor_ms, 2),
                "gc_off_saves_ms": round(ms - gc_off_ms),
                "cpu_ratio_gc_off": round(gc_off_cpu / floor_cpu, 2),
                "gc_off_saves_cpu_ms": round(cpu - gc_off_cpu),
            }
        return {
            "floor_ms": round(floor_ms),
            "floor_cpu_ms": round(floor_cpu),
            "floor_rss_mb": round(floor_mb, 1),
            "floor_modules": round(floor_modules),
            "runs": runs,
            "target_ratio": TARGET,
            "worst_ratio": max(h["ratio"] for h in handlers.values()),
            "worst_cpu_ratio": max(h["cpu_ratio"] for h in handlers.values()),
            "worst_ratio_gc_off": max(h["ratio_gc_off"] for h in handlers.values()),
            "worst_cpu_ratio_gc_off": max(h["cpu_ratio_gc_off"] for h in handlers.values()),
            "handlers": handlers,
            "artifact": str(root.relative_to(ROOT)) if root.is_relative_to(ROOT) else str(root),
        }
    finally:
        sim.stop()
        local.stop()


def table(result: dict[str, Any]) -> str:
    if "handlers" not in result:
        return str(result)
    lines = [
        f"floor `import anthropic, boto3`: {result['floor_ms']} ms ({result['floor_cpu_ms']} ms CPU), "
        f"{result['floor_rss_mb']} MB, "
        f"{result['floor_modules']} modules (median of {result['runs']}; target <= {result['target_ratio']}x)",
        f"{'function':24} {'init ms':>8} {'x floor':>8} {'CPU x':>6} {'+MB':>6} {'+modules':>9} {'gc off ms':>10} "
        f"{'x floor':>8} {'CPU x':>6} {'gc saves (CPU)':>15}",
    ]
    for name, h in result["handlers"].items():
        lines.append(
            f"{name:24} {h['init_ms']:>8} {h['ratio']:>8.2f} {h['cpu_ratio']:>6.2f} "
            f"{h['rss_delta_mb']:>6} {h['modules_beyond_floor']:>9} "
            f"{h['init_ms_gc_off']:>10} {h['ratio_gc_off']:>8.2f} {h['cpu_ratio_gc_off']:>6.2f} "
            f"{h['gc_off_saves_ms']:>6} ms ({h['gc_off_saves_cpu_ms']} ms)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
    sys.exit(0)
