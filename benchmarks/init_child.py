"""Run by benchmarks.coldstart in a clean Python 3.13: one Lambda init phase, measured from inside.

`_HANDLER` names the handler (`app.handler`), or is `floor` for `import anthropic, boto3` alone.
`BENCH_GC=off` keeps the garbage collector disabled during the imports (enabled again afterwards,
as a handler would before its first request), to measure what collections cost the init.
Prints one JSON line: init_ms (wall), cpu_ms (process time: steadier on a busy machine), rss_mb
(peak), modules (entries in sys.modules).
"""

import gc
import importlib
import json
import os
import resource
import sys
import time

if os.environ.get("BENCH_GC") == "off":
    gc.disable()
started, cpu_started = time.perf_counter(), time.process_time()
target = os.environ["_HANDLER"]
if target == "floor":
    import anthropic  # noqa: F401
    import boto3  # noqa: F401
else:
    module_name, _, function_name = target.rpartition(".")
    getattr(importlib.import_module(module_name), function_name)
init_ms = (time.perf_counter() - started) * 1000
cpu_ms = (time.process_time() - cpu_started) * 1000
gc.enable()
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result = {"init_ms": init_ms, "cpu_ms": cpu_ms, "rss_mb": rss_mb, "modules": len(sys.modules)}
print(json.dumps(result), file=sys.__stdout__)
