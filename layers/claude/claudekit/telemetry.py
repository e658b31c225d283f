"""One Logger and Tracer per container, and per-call metrics with only feature and model dimensions.

Nothing here ever receives prompt or completion text; user ids are hashed before logging.

The Tracer is built on first use of `tracer`, not at import: building it imports aws_xray_sdk
(10-25 ms of init), and under the Lambda Web Adapter (the stream function) X-Ray records nothing,
so only the functions that trace pay for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cache

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

logger = Logger()


@cache
def _tracer() -> Tracer:
    return Tracer()


def __getattr__(name: str) -> Tracer:
    """`telemetry.tracer` (and `from claudekit.telemetry import tracer`): the one Tracer, built once."""
    if name == "tracer":
        return _tracer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
