"""`make bench`: run every benchmark entry, print one table, write benchmarks/results/latest.json."""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ENTRIES = ["coldstart", "client", "stream", "jobs", "localstack"]
OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def main() -> int:
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {platform.processor() or 'unknown cpu'}",
        "entries": {},
    }
    failed = False
    for name in ENTRIES:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ImportError:
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            report["entries"][name] = module.run()
        except Exception as exc:  # one broken entry must not hide the others' numbers
            report["entries"][name] = {"error": repr(exc)}
            failed = True
        report["entries"][name]["seconds"] = round(time.perf_counter() - started, 1)

    print(f"\n{'entry':8} {'metric':28} value")
    for name, values in report["entries"].items():
        for key, value in values.items():
            print(f"{name:8} {key:28} {value}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
