"""One Logger and Tracer per container, and per-call metrics with only feature and model dimensions.

Nothing here ever receives prompt or completion text; user ids are hashed before logging.

The Tracer is built on first use, not at import: building it imports aws_xray_sdk and patches
botocore (about 8 ms of CPU), and under the Lambda Web Adapter (the stream function) X-Ray records
nothing. A traced handler (`traced`) builds it on its first invocation, so the init phase never
pays it; with SnapStart, `prepare_tracer` (the before-snapshot hook) builds it into the snapshot.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

logger = Logger()


H = TypeVar("H", bound=Callable[[Any, Any], Any])
# Whether a handler of this process is traced: only then does a snapshot get the Tracer.
_traced = False


@cache
def _tracer() -> Tracer:
    # botocore only: patch_all would also import and patch sqlite3, which nothing here uses (the
    # other libraries it knows are not installed; the Anthropic SDK's httpx2 is not one of them).
    return Tracer(patch_modules=("botocore",))


def traced(handler: H) -> H:
    """`tracer.capture_lambda_handler(handler)`, applied when the first invocation arrives."""
    global _traced
    _traced = True
    captured: Callable[[Any, Any], Any] | None = None
    first = threading.Lock()  # the local stack invokes from a thread pool: one Tracer, built once

    @functools.wraps(handler)
    def first_traced(event: Any, context: Any) -> Any:
        nonlocal captured
        if captured is None:
            with first:
                captured = captured or _tracer().capture_lambda_handler(handler)
        return captured(event, context)

    return cast(H, first_traced)


def prepare_tracer() -> None:
    """Build the Tracer now if a handler here is traced (SnapStart: before the snapshot)."""
    if _traced:
        _tracer()


def hash_user(user_id: str) -> str:
    """A stable pseudonym for logs and keys: joinable across lines, not reversible to the id."""
    return hashlib.sha256(f"claude-kit:{user_id}".encode()).hexdigest()[:16]


def emit_metrics(
    namespace: str,
    *,
    feature: str,
    model: str,
    values: Mapping[str, tuple[float, MetricUnit]],
) -> None:
    """Write one EMF record now, published per (feature, model) and as a dimensionless total.

    A fresh provider per call keeps concurrent calls (batch records in threads) from mixing
    dimensions, and service="" keeps Powertools from adding a third dimension. The empty
    dimension set gives the totals that alarms such as the daily cost alarm read.
    """
    emf = AmazonCloudWatchEMFProvider(namespace=namespace, service="")
    emf.add_dimension(name="feature", value=feature)
    emf.add_dimension(name="model", value=model)
    for name, (value, unit) in values.items():
        emf.add_metric(name=name, unit=unit, value=value)
    record = emf.serialize_metric_set()
    record["_aws"]["CloudWatchMetrics"][0]["Dimensions"].append([])
    print(json.dumps(record, separators=(",", ":")), flush=True)


def emit_error(namespace: str, *, feature: str, model: str, code: str) -> None:
    """Errors by code: the code is a metric name suffix so dimensions stay feature and model."""
    emit_metrics(
        namespace,
        feature=feature,
        model=model,
        values={"Errors": (1, MetricUnit.Count), f"Errors_{code}": (1, MetricUnit.Count)},
    )
