"""Batch jobs throughput: 100 jobs at 200 ms simulated upstream latency through the local SQS event source.

Concurrency = the event source's MaximumConcurrency (concurrent invocations) x records processed
concurrently per invocation (WORKER_RECORD_CONCURRENCY), both the template's defaults, with its
BatchSize. The ideal wall time is ceil(jobs / concurrency) x latency; the rest is the queue,
DynamoDB (moto) and bookkeeping.

Moto on loopback is slower per call than DynamoDB, and it is one server that serves one call at a
time. It runs in a process of its own (as DynamoDB and SQS are services of their own; with
BENCH_MOTO_PROCESS=0 it shares this process's interpreter lock with the workers, the event source
and the simulator, and the run becomes CPU-bound). The wall time is also reported with moto's own time
subtracted: each call's kind timed one at a time afterwards (CALIBRATION_JOBS jobs, one invocation,
one record: no queue), times the calls the run made. Beside it, for comparison, the wall time minus
each worker's share of moto's time under load (the summed durations divided by the concurrency),
and a lower bound: the wall time minus every moment at least one call was in flight (the union of
their intervals). The process's CPU time over the run says whether it was CPU-bound. The function's
AWS calls are counted per job; the event source's own polling and deletes (the Lambda service's
work, not the function's) are not. The end is seen from the handler's answers (every job reported
done), not by polling the queue, which would load moto (and the one process's CPU) beside the work
it measures.

    python -m benchmarks.jobs
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import statistics
import threading
import time
import uuid
from typing import Any

JOBS = 100
LATENCY = 0.2
TARGET = 1.5  # issue 15: within 1.5x the ideal once moto's own time is subtracted
# Moto in a process of its own, as DynamoDB and SQS are services of their own (BENCH_MOTO_PROCESS=0:
# in the bench's process, sharing its interpreter lock with the workers).
MOTO_PROCESS = os.environ.get("BENCH_MOTO_PROCESS", "1") != "0"
CALIBRATION_JOBS = 10  # run one at a time afterwards, to time moto's calls without a queue


def template_concurrency() -> tuple[int, int, int]:
    """(BatchSize, MaximumConcurrency, per-invocation record concurrency): the template's defaults."""
    from local.aws import load_template

    doc = load_template()
    params = doc["Parameters"]
    source = doc["Resources"]["WorkerFunction"]["Properties"]["Events"]["Jobs"]["Properties"]
    return (
        int(source["BatchSize"]),
        int(params["WorkerMaxConcurrency"]["Default"]),
        int(params["WorkerRecordConcurrency"]["Default"]),
    )


def run(jobs_count: int = JOBS) -> dict[str, Any]:
    from benchmarks.awscalls import AwsCalls, busy_seconds
    from benchmarks.env import BENCH_KEY, bench_environment
    from claudekit.store.jobs import JobStore
    from claudekit.tasks.generate import GenerateTask
    from claudekit.tasks.jobs.models import GenerateJob, JobsBody
    from claudekit.tasks.jobs.submit import submit
    from claudekit.tasks.jobs.worker import JobWorker
    from local.simulator import Latency, Simulator
    from local.sqs_source import SqsEventSource

    batch_size, pollers, per_batch = template_concurrency()
    with (
        Simulator(latency=Latency(ttft=LATENCY, tokens_per_second=0), api_key=BENCH_KEY).start() as sim,
        bench_environment(
            sim,
            moto_process=MOTO_PROCESS,
            POWERTOOLS_METRICS_DISABLED="true",
            WORKER_RECORD_CONCURRENCY=str(per_batch),
            JOB_MIN_START_SECONDS="1",
        ) as local,
        AwsCalls() as counter,
        contextlib.redirect_stdout(io.StringIO()),  # the functions' logs and EMF lines
    ):

        class Source(SqsEventSource):
            def _client(self) -> Any:
                return counter.ignore(super()._client())

        worker = JobWorker()
        store = JobStore(local.physical["StateTable"])

        def drive(count: int, batch: int, invocations: int) -> tuple[float, float, list[Any], list[str]]:
            """Post `count` jobs, run them through the event source; wall and CPU seconds, calls, ids."""
            done = threading.Event()
            finished: list[int] = []
            lock = threading.Lock()

            def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
                """The worker, counting the records it reports done (not among the batch's failures)."""
                response = worker.handle(event, context)
                with lock:
                    finished.append(len(event["Records"]) - len(response["batchItemFailures"]))
                    if sum(finished) >= count:
                        done.set()
                return response

            task: GenerateTask = "summarize"
            body = JobsBody(items=[GenerateJob(task=task, input=f"Bench {i} {uuid.uuid4()}") for i in range(count)])
            ids = [s.job_id for s in submit(body, "bench-user")]
            source = Source(
                handle,
                local.physical["JobsQueue"],
                local.arns["JobsQueue"],
                endpoint_url=local.endpoint,
                batch_size=batch,
                max_concurrency=invocations,
                function_timeout=300,
                wait_seconds=1,
            )
            counter.take()
            started, cpu = time.monotonic(), time.process_time()
            source.start()
            done.wait(120)
            wall, cpu = time.monotonic() - started, time.process_time() - cpu
            source.stop()
            return wall, cpu, counter.take(), ids

        wall, cpu, calls, ids = drive(jobs_count, batch_size, pollers)
        succeeded = sum(1 for i in ids if (store.get(i) or {}).get("status") == "succeeded")
        upstream = len(sim.message_requests())
        # The same calls one at a time (one invocation, one record): moto's own time per call.
        _, _, alone, _ = drive(CALIBRATION_JOBS, 1, 1)

    concurrency = pollers * per_batch
    ideal = math.ceil(jobs_count / concurrency) * LATENCY
    moto = busy_seconds(calls)
    per_worker = sum(c.ended - c.started for c in calls) / concurrency
    own = own_seconds(alone)
    moto_own = sum(own.get(c.name, statistics.median(own.values())) for c in calls)
    kinds = AwsCalls.counts(calls)
    return {
        "jobs": jobs_count,
        "succeeded": succeeded,
        "upstream_calls": upstream,
        "latency_s": LATENCY,
        "batch_size": batch_size,
        "pollers": pollers,
        "per_batch_concurrency": per_batch,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "wall_x_ideal": round(wall / ideal, 2),
        "process_cpu_s": round(cpu, 3),
        "moto_process": MOTO_PROCESS,
        "moto_own_ms_per_call": {k: round(v * 1000, 1) for k, v in sorted(own.items())},
        "moto_own_s": round(moto_own, 3),
        "moto_own_share_of_wall": round(moto_own / wall, 2),
        "wall_minus_moto_s": round(wall - moto_own, 3),
        "wall_minus_moto_x_ideal": round((wall - moto_own) / ideal, 2),
        "moto_ms_per_call": round(sum(c.ended - c.started for c in calls) / max(1, len(calls)) * 1000, 1),
        "moto_s_per_worker": round(per_worker, 3),
        "wall_minus_moto_share_x_ideal": round((wall - per_worker) / ideal, 2),
        "moto_busy_s": round(moto, 3),
        "wall_minus_moto_busy_x_ideal": round((wall - moto) / ideal, 2),
        "target_x_ideal": TARGET,
        "aws_calls_per_job": round(len(calls) / jobs_count, 2),
        "dynamodb_calls_per_job": round(sum(1 for c in calls if c.service == "dynamodb") / jobs_count, 2),
        "calls_per_job": {k: round(v / jobs_count, 2) for k, v in sorted(kinds.items())},
        "jobs_per_s": round(jobs_count / wall, 1),
    }


def own_seconds(calls: list[Any]) -> dict[str, float]:
    """Median duration of each kind of call made one at a time: moto's own time, with no queue."""
    by_kind: dict[str, list[float]] = {}
    for call in calls:
        by_kind.setdefault(call.name, []).append(call.ended - call.started)
    return {kind: statistics.median(durations) for kind, durations in by_kind.items()}


def table(result: dict[str, Any]) -> str:
    rows = [
        ("jobs (succeeded / upstream calls)", f"{result['jobs']} ({result['succeeded']} / {result['upstream_calls']})"),
        ("upstream latency", f"{result['latency_s'] * 1000:.0f} ms"),
        (
            "concurrency",
            f"{result['pollers']} invocations x {result['per_batch_concurrency']} records = {result['concurrency']}"
            f" (batches of {result['batch_size']})",
        ),
        ("wall time / ideal", f"{result['wall_s']:.2f} s / {result['ideal_s']:.2f} s = {result['wall_x_ideal']}x"),
        (
            "minus moto's own time",
            f"{result['wall_minus_moto_s']:.2f} s = {result['wall_minus_moto_x_ideal']}x (target <= "
            f"{result['target_x_ideal']}x; {result['moto_own_s']:.2f} s = the calls x their time one at a time, "
            f"{result['moto_own_share_of_wall']:.0%} of the wall)",
        ),
        (
            "  moto's own time per call",
            ", ".join(f"{k} {v} ms" for k, v in result["moto_own_ms_per_call"].items() if k.startswith("dynamodb")),
        ),
        (
            "  under load",
            f"{result['moto_ms_per_call']} ms per call; process CPU {result['process_cpu_s']:.2f} s in "
            f"{result['wall_s']:.2f} s ("
            + ("moto in its own process" if result["moto_process"] else "moto shares this process's interpreter lock")
            + "; workers, event source and simulator here)",
        ),
        (
            "minus each worker's share",
            f"{result['wall_minus_moto_share_x_ideal']}x (moto's time under load / {result['concurrency']}: "
            f"{result['moto_s_per_worker']:.2f} s)",
        ),
        (
            "minus all of moto's busy time",
            f"{result['wall_minus_moto_busy_x_ideal']}x (busy {result['moto_busy_s']:.2f} s: a lower bound)",
        ),
        ("AWS calls per job", f"{result['aws_calls_per_job']} ({result['dynamodb_calls_per_job']} DynamoDB)"),
        ("  of which", ", ".join(f"{k} x{v}" for k, v in result["calls_per_job"].items())),
        ("throughput", f"{result['jobs_per_s']} jobs/s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


if __name__ == "__main__":
    print(table(run()))
