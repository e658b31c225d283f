"""`make run`: the whole stack on 127.0.0.1, no AWS account and no Docker.

- AWS: moto on loopback, with the resources template.yaml declares (local.aws).
- Claude: the built-in simulator, unless ANTHROPIC_BASE_URL (+ ANTHROPIC_API_KEY) points elsewhere.
- HTTP: an API Gateway stand-in on $PORT (default 3000) serving the template's routes (local.shim).
- Functions: each runs as Lambda runs it, a pool of instances (one process each, one request at
  a time; more instances while all are busy, up to LOCAL_MAX_INSTANCES, default 4). A function
  behind the Lambda Web Adapter serves its ASGI app under uvicorn in each instance.
- SQS: the template's SQS event sources poll here and invoke their function's instances, so a
  posted job is processed locally.

Limits mirror the template parameters: RATE_LIMIT_PER_MINUTE, DAILY_BUDGET_USD, MAX_JOBS_IN_FLIGHT (and any other
parameter by its variable name, e.g. MODEL_FAST) are read from the environment.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import uvicorn

from local import aws
from local.instances import FunctionPool, WebAdapterPool
from local.shim import ROOT, ApiGatewayShim, pools, routes_from_template
from local.simulator import Latency, Simulator
from local.sqs_source import SqsEventSource, sqs_events

SIM_KEY = "sk-local-simulator"
# Template parameter -> the environment variable a developer sets to change it locally.
PARAMETER_ENV = {
    "RateLimitPerMinute": "RATE_LIMIT_PER_MINUTE",
    "DailyBudgetUsd": "DAILY_BUDGET_USD",
    "Plans": "PLANS",
    "AdminGroup": "ADMIN_GROUP",
    "UsageRetentionDays": "USAGE_RETENTION_DAYS",
    "MaxJobsInFlight": "MAX_JOBS_IN_FLIGHT",
    "MaxTokensCeiling": "MAX_TOKENS_CEILING",
    "MaxInputChars": "MAX_INPUT_CHARS",
    "ModelFast": "MODEL_FAST",
    "ModelBalanced": "MODEL_BALANCED",
    "ModelDeep": "MODEL_DEEP",
    "ModelFallback": "MODEL_FALLBACK",
    "LogLevel": "LOG_LEVEL",
    "BreakerFailureThreshold": "BREAKER_FAILURE_THRESHOLD",
    "BreakerRecoverySeconds": "BREAKER_RECOVERY_SECONDS",
    "JobMaxAgeSeconds": "JOB_MAX_AGE_SECONDS",
}


class Stack:
    """Everything `make run` starts, in the order it must stop."""

    def __init__(self, *, host: str, port: int, sim_latency: Latency | None = None) -> None:
        self.host, self.port = host, port
        self.sim_latency = sim_latency or Latency(ttft=0.05, tokens_per_second=400)
        self.simulator: Simulator | None = None
        self.local_aws: aws.LocalAws | None = None
        self.sqs_sources: list[SqsEventSource] = []
        self.pools: list[FunctionPool | WebAdapterPool] = []
        self.server: uvicorn.Server | None = None

    def start(self) -> uvicorn.Server:
        base_url = os.environ.get("ANTHROPIC_BASE_URL")
        api_key = os.environ.get("ANTHROPIC_API_KEY", SIM_KEY)
        if not base_url:
            self.simulator = Simulator(host="127.0.0.1", port=0, latency=self.sim_latency, api_key=SIM_KEY).start()
            base_url, api_key = self.simulator.url, SIM_KEY
        overrides = {name: os.environ[var] for name, var in PARAMETER_ENV.items() if os.environ.get(var)}
        self.local_aws = aws.start(api_key=api_key, parameters=overrides)
        os.environ["AWS_ENDPOINT_URL"] = self.local_aws.endpoint
        os.environ.update(self.local_aws.environment)
        os.environ["ANTHROPIC_BASE_URL"] = base_url
        os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon locally

        doc = aws.load_template()
        timeout = float(doc.get("Parameters", {}).get("RequestBudgetSeconds", {}).get("Default", 30))
        routes = routes_from_template(doc, timeout)
        self.pools = pools(routes)
        self._start_sqs_sources(doc, timeout)
        self._start_pools()
        config = uvicorn.Config(
            ApiGatewayShim(routes),
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            server_header=False,  # API Gateway names no server
        )
        self.server = uvicorn.Server(config)
        return self.server

    def _start_sqs_sources(self, doc: dict[str, Any], default_timeout: float) -> None:
        """Emulate Lambda's SQS event source mapping for each SQS event in the template."""
        assert self.local_aws is not None
        for event in sqs_events(doc, self.local_aws.parameters):
            props = event.properties
            timeout = props.get("Timeout")
            seconds = float(timeout) if isinstance(timeout, int | float) else default_timeout
            handler = str(props.get("Handler", "app.handler")).split(".")[-1]
            # An instance per concurrent invocation, as Lambda gives the event source.
            pool = FunctionPool(
                event.function, ROOT / props["CodeUri"], handler, timeout=seconds, max_instances=event.max_concurrency
            )
            self.pools.append(pool)
            source = SqsEventSource(
                pool,
                self.local_aws.physical[event.queue],
                self.local_aws.arns[event.queue],
                endpoint_url=self.local_aws.endpoint,
                batch_size=event.batch_size,
                max_concurrency=event.max_concurrency,
                report_batch_item_failures=event.report_batch_item_failures,
                function_timeout=seconds,
            )
            self.sqs_sources.append(source)

    def _start_pools(self) -> None:
        """Every function's first instance, in parallel (cold starts), then the SQS pollers."""
        errors: list[BaseException] = []

        def start(pool: FunctionPool | WebAdapterPool) -> None:
            try:
                pool.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(pool,)) for pool in self.pools]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        for source in self.sqs_sources:
            source.start()

    def stop(self) -> None:
        for source in self.sqs_sources:
            source.stop()
        for pool in self.pools:
            pool.stop()
        if self.local_aws is not None:
            self.local_aws.stop()
        if self.simulator is not None:
            self.simulator.stop()


def banner(url: str, upstream: str) -> str:
    return f"""
Claude kit local stack on {url}  (upstream: {upstream}; AWS: moto; Ctrl-C stops)

  curl -s {url}/generate -H 'content-type: application/json' -d '{{"prompt": "Write a haiku about retries"}}'
  curl -s {url}/classify -H 'content-type: application/json' \\
       -d '{{"text": "The parcel arrived broken", "labels": ["positive", "negative", "neutral"]}}'
  curl -s {url}/ideas -H 'content-type: application/json' -d '{{"topic": "serverless cost control", "count": 3}}'
  curl -N {url}/stream -H 'content-type: application/json' -d '{{"prompt": "Explain backoff with jitter"}}'
  curl -s {url}/jobs -H 'content-type: application/json' \\
       -d '{{"items": [{{"task": "summarize", "input": "Long text to summarise..."}}]}}'
  curl -s {url}/usage -H 'X-User-Id: alice'
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    args = parser.parse_args(argv)

    stack = Stack(host=args.host, port=args.port)
    try:
        server = stack.start()
    except BaseException:
        stack.stop()
        raise
    upstream = "simulator " + stack.simulator.url if stack.simulator else os.environ["ANTHROPIC_BASE_URL"]

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started:
            print(banner(f"http://{args.host}:{args.port}", upstream), flush=True)

    threading.Thread(target=announce, daemon=True).start()

    def shutdown(signum: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        server.run()
    finally:
        stack.stop()
        print("stopped", flush=True)
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
