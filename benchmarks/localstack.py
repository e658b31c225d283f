"""The local stack over a long session: memory growth and latency trend under steady load.

Starts `python -m local.stack` as `make run` does, sends N POST /generate requests at 16
concurrent over real HTTP (keep-alive, one connection per client thread, 16 users), and reports
the growth of the stack's resident memory (the stack process, which holds moto, and the whole
process tree with its function instances) from after a warm-up to the end, the throughput, and
the p50 latency of the first and of the last thousand requests: a table that only grows makes
every admission slower, which shows as the second p50 drifting above the first.

    python -m benchmarks.localstack                       # 3,000 requests
    BENCH_LOCALSTACK_REQUESTS=10000 python -m benchmarks.localstack
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = int(os.environ.get("BENCH_LOCALSTACK_REQUESTS", "3000"))
CONCURRENCY = 16
WARMUP = 200  # brings the pool to its full instance count before the baseline is taken
WINDOW = 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:  # the process ended between listing and reading
        pass
    return 0.0


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc (no psutil in the dev environment)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stack exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("the stack did not start listening")


def _drive(port: int, count: int, offset: int = 0) -> tuple[list[float], dict[int, int]]:
    """`count` requests from CONCURRENCY threads; latencies (ms) in the order the requests were sent."""
    latencies = [0.0] * count
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    issued = iter(range(count))

    def client(worker: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"content-type": "application/json", "x-user-id": f"bench-{worker}"}
        while True:
            with lock:
                index = next(issued, None)
            if index is None:
                break
            body = json.dumps({"prompt": f"Local stack bench {offset + index}", "max_tokens": 64})
            started = time.perf_counter()
            try:
                connection.request("POST", "/generate", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 0
            latencies[index] = (time.perf_counter() - started) * 1000
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        connection.close()

    threads = [threading.Thread(target=client, args=(worker,)) for worker in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses


def run(requests: int = REQUESTS) -> dict[str, Any]:
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        # Measure the stack, not the limits: nobody is refused.
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "DAILY_BUDGET_USD": "100000",
        "LOG_LEVEL": "WARNING",
    }
    # The stack's own output, shown if it fails to start.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "local.stack", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                _wait_listening(port, process)
            except (RuntimeError, TimeoutError):
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-4000:])
                raise
            _drive(port, WARMUP, offset=-WARMUP)
            stack_before = _rss_mb(process.pid)
            tree_before = sum(_rss_mb(pid) for pid in _tree(process.pid))
            started = time.perf_counter()
            latencies, statuses = _drive(port, requests)
            wall = time.perf_counter() - started
            stack_after = _rss_mb(process.pid)
            tree_after = sum(_rss_mb(pid) for pid in _tree(process.pid))
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    window = min(WINDOW, len(latencies))
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "concurrency": CONCURRENCY,
        "ok": statuses.get(200, 0),
        "not_ok": sum(n for status, n in statuses.items() if status != 200),
        "req_per_s": round(requests / wall, 1),
        "p50_first_ms": round(statistics.median(latencies[:window]), 1),
        "p50_last_ms": round(statistics.median(latencies[-window:]), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 1),
        "stack_rss_mb_before": round(stack_before, 1),
        "stack_rss_growth_mb": round(stack_after - stack_before, 1),
        "tree_rss_mb_before": round(tree_before, 1),
        "tree_rss_growth_mb": round(tree_after - tree_before, 1),
    }


def main() -> None:
    for key, value in run().items():
        print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
