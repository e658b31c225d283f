"""`make bench`: run every entry, print issue 15's targets side by side, write benchmarks/results.json.

Each entry measures one thing (see its docstring); this puts every target in one table, as a ratio
or a count measured in the same run, so a change that moves a figure shows as a moved figure.
results.json is committed with each change that moves one. Timings are never asserted in tests.

    python -m benchmarks.run [entry ...]
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ENTRIES = ["coldstart", "routes", "stream", "jobs", "localstack"]
OUT = Path(__file__).resolve().parent / "results.json"


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    return f"{platform.machine()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()} (bench driver)"


def _get(entries: dict[str, Any], entry: str, *keys: str) -> Any:
    value: Any = entries.get(entry, {})
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _pair(first: Any, last: Any) -> str | None:
    return None if first is None or last is None else f"{first} / {last}"


def counts_over_target(entries: dict[str, Any]) -> list[tuple[str, str]]:
    """The routes whose counted calls exceed their target (counts fail the bench; timings never do)."""
    over = []
    for route, r in entries.get("routes", {}).get("routes", {}).items():
        if r.get("dynamodb_target") is not None and r["dynamodb_hot_path"] > r["dynamodb_target"]:
            over.append((route, f"{r['dynamodb_hot_path']} DynamoDB calls (target {r['dynamodb_target']})"))
        if r.get("breaker_reads_per_request"):
            over.append((route, f"{r['breaker_reads_per_request']} breaker state reads (target 0)"))
    return over


def targets(entries: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """(target, measured as, today's figure, goal) for every issue-15 target this run measured."""
    rows: list[tuple[str, str, Any, str]] = [
        ("cold start, worst handler", "init / floor (wall)", _get(entries, "coldstart", "worst_ratio"), "<= 1.10x"),
        ("cold start, worst handler", "init / floor (CPU)", _get(entries, "coldstart", "worst_cpu_ratio"), "<= 1.10x"),
        ("cold start, gc off in init", "init / floor (wall)", _get(entries, "coldstart", "worst_ratio_gc_off"), "-"),
        (
            "cold start, gc off in init",
            "init / floor (CPU)",
            _get(entries, "coldstart", "worst_cpu_ratio_gc_off"),
            "-",
        ),
        (
            "hot path, /generate",
            "DynamoDB calls per request",
            _get(entries, "routes", "generate_dynamodb_calls_per_request"),
            "2",
        ),
        (
            "breaker while closed",
            "state reads per request, worst",
            _get(entries, "routes", "breaker_reads_per_request_while_closed"),
            "0",
        ),
        ("our CPU per request", "ms p50, worst route", _get(entries, "routes", "our_cpu_ms_p50_worst"), "<= 3 ms"),
        (
            "handler CPU per request",
            "ms p50, worst route (SDKs included)",
            _get(entries, "routes", "cpu_ms_p50_worst"),
            "-",
        ),
        (
            "stream first byte",
            "ms after upstream's first text, p50",
            _get(entries, "stream", "first_byte_after_upstream_text_ms_p50"),
            "<= 10 ms",
        ),
        ("stream delta gaps", "ms added, p95", _get(entries, "stream", "gap_added_ms_p95"), "<= 1 ms"),
        ("100 jobs at 200 ms", "wall / ideal", _get(entries, "jobs", "wall_x_ideal"), "-"),
        ("100 jobs at 200 ms", "minus moto / ideal", _get(entries, "jobs", "wall_minus_moto_x_ideal"), "<= 1.5x"),
        ("jobs", "AWS calls per job", _get(entries, "jobs", "aws_calls_per_job"), "minimise"),
        (
            "local stack, long session",
            "RSS growth, MB over the run's requests",
            _get(entries, "localstack", "stack_rss_growth_mb"),
            "<= 50 per 10,000",
        ),
        (
            "local stack, long session",
            "p50 ms, first / last thousand",
            _pair(_get(entries, "localstack", "p50_first_ms"), _get(entries, "localstack", "p50_last_ms")),
            "no upward trend",
        ),
    ]
    for route, r in (_get(entries, "routes", "routes") or {}).items():
        rows.append(
            (
                f"  {route}",
                "AWS / DynamoDB calls (hot path) per request",
                f"{r['aws_calls_per_request']} / {r['dynamodb_calls_per_request']} ({r['dynamodb_hot_path']})",
                str(r["dynamodb_target"] or "-"),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or ENTRIES
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "entries": {},
    }
    failed = False
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            result = module.run()
            if hasattr(module, "table"):
                print(module.table(result))
        except Exception as exc:  # one broken entry must not hide the others' numbers
            result = {"error": repr(exc)}
            print(f"   failed: {exc!r}")
            failed = True
        result["seconds"] = round(time.perf_counter() - started, 1)
        report["entries"][name] = result

    report["targets"] = [
        {"target": t, "measured_as": m, "value": v, "goal": g} for t, m, v, g in targets(report["entries"])
    ]
    print(f"\nissue 15's targets ({report['machine']}, {report['when']})")
    print(f"{'target':28} {'measured as':44} {'today':>16}  goal")
    for row in report["targets"]:
        value = "n/a" if row["value"] is None else row["value"]
        print(f"{row['target']:28} {row['measured_as']:44} {value!s:>16}  {row['goal']}")
    for route, over in counts_over_target(report["entries"]):
        print(f"FAILED: {route} makes {over} per request, above its target")
        failed = True
    if names == ENTRIES:  # a partial run must not overwrite the committed figures
        OUT.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten to {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
