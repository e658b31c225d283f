"""Batch jobs throughput: 100 jobs at 200 ms simulated upstream latency through the local SQS event source.

Concurrency = pollers (concurrent invocations, the event source's MaximumConcurrency) x records
processed concurrently per invocation (BATCH_MAX_CONCURRENCY). The ideal wall time is
ceil(jobs / concurrency) x latency; the rest is the queue, DynamoDB (moto) and bookkeeping.

    python -m benchmarks.jobs
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

JOBS = 100
LATENCY = 0.2
POLLERS = 2
PER_BATCH = 10


def run(jobs_count: int = JOBS, pollers: int = POLLERS, per_batch: int = PER_BATCH) -> dict[str, Any]:
    from benchmarks.env import BENCH_KEY, bench_environment
    from claudekit import jobs
    from claudekit.contract import GenerateTask
    from local.simulator import Latency, Simulator
    from local.sqs_source import SqsEventSource

    with (
        Simulator(latency=Latency(ttft=LATENCY, tokens_per_second=0), api_key=BENCH_KEY).start() as sim,
        bench_environment(sim, POWERTOOLS_METRICS_DISABLED="true") as local,
    ):
        consumer = jobs.JobConsumer(options=jobs.JobOptions(concurrency=per_batch, min_start_seconds=1))
        task: GenerateTask = "summarize"
        body = jobs.JobsBody(
            items=[jobs.GenerateJob(task=task, input=f"Bench {i} {uuid.uuid4()}") for i in range(jobs_count)]
        )
        submitted = jobs.submit(body, "bench-user")
        ids = [s.job_id for s in submitted]
        store = jobs.JobStore(local.physical["StateTable"])
        source = SqsEventSource(
            consumer.handle,
            local.physical["JobsQueue"],
            local.arns["JobsQueue"],
            endpoint_url=local.endpoint,
            batch_size=10,
            max_concurrency=pollers,
            function_timeout=300,
            wait_seconds=1,
        )
        started = time.monotonic()
        source.start()
        sqs = local.client("sqs")
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        while time.monotonic() - started < 120:
            # One cheap call per poll: every job is done once its message is deleted.
            counts = sqs.get_queue_attributes(QueueUrl=local.physical["JobsQueue"], AttributeNames=names)
            if not any(int(v) for v in counts["Attributes"].values()):
                break
            time.sleep(0.02)
        wall = time.monotonic() - started
        source.stop()
        succeeded = sum(1 for i in ids if (store.get(i) or {}).get("status") == "succeeded")
        upstream = len(sim.message_requests())

    concurrency = pollers * per_batch
    ideal = math.ceil(jobs_count / concurrency) * LATENCY
    result = {
        "jobs": jobs_count,
        "succeeded": succeeded,
        "upstream_calls": upstream,
        "latency_s": LATENCY,
        "pollers": pollers,
        "per_batch_concurrency": per_batch,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "overhead_x": round(wall / ideal, 2),
        "jobs_per_s": round(jobs_count / wall, 1),
    }
    return result


def table(result: dict[str, Any]) -> str:
    rows = [
        ("jobs (succeeded / upstream calls)", f"{result['jobs']} ({result['succeeded']} / {result['upstream_calls']})"),
        ("upstream latency", f"{result['latency_s'] * 1000:.0f} ms"),
        ("concurrency", f"{result['pollers']} pollers x {result['per_batch_concurrency']} = {result['concurrency']}"),
        ("wall time", f"{result['wall_s']:.2f} s"),
        ("ideal ceil(jobs/concurrency) x latency", f"{result['ideal_s']:.2f} s"),
        ("wall / ideal", f"{result['overhead_x']:.2f}x"),
        ("throughput", f"{result['jobs_per_s']} jobs/s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


if __name__ == "__main__":
    print(table(run()))
