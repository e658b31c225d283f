"""Per-user rate limits and daily cost budgets, enforced atomically in DynamoDB.

Concurrency is the hard part: ten requests racing against the last dollar must not
all pass. Each call therefore *reserves* its worst-case cost with a conditional write
before calling Claude, and settles to the real cost afterwards.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
from botocore.exceptions import ClientError

from claudekit.errors import BudgetExceeded, CostExceedsBudget, InternalError, RateLimited
from claudekit.telemetry import hash_user
from claudekit.usage import Usage

DAY_SECONDS = 86_400


def _today(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _seconds_to_midnight(now: float) -> int:
    current = datetime.fromtimestamp(now, UTC)
    midnight = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - current).total_seconds()))


# Per-feature counters live beside the totals as flat attributes `f#<feature>#<counter>`: DynamoDB
# cannot ADD into a map that does not exist yet, and flat names need no first-write special case.
FEATURE_PREFIX = "f#"
FEATURE_COUNTERS = ("requests", "cost_usd", "without_caching_usd", "without_routing_usd")


def _number(value: Any) -> int | float:
    number = Decimal(str(value))
    return int(number) if number == number.to_integral_value() else float(number)


@dataclass(frozen=True)
class Costs:
    """A call's cost, and what it would have cost without caching and without routing."""

    actual: Decimal
    without_caching: Decimal
    without_routing: Decimal


@dataclass(frozen=True)
class Reservation:
    user_key: str
    day: str
    amount: Decimal


class Ledger:
    """Usage counters in the state table: `usage#<user>#<day>` and `rate#<user>#<minute>`."""

    def __init__(self, table_name: str, *, rate_per_minute: int, daily_budget_usd: float) -> None:
        self._table_name = table_name
        self._local = threading.local()
        self.rate_per_minute = rate_per_minute
        self.daily_budget = Decimal(str(daily_budget_usd))

    @property
    def _table(self) -> Any:
        """boto3 resources are not thread-safe: one per thread (batch records run in threads)."""
        table = getattr(self._local, "table", None)
        if table is None:
            table = self._local.table = boto3.resource("dynamodb").Table(self._table_name)
        return table

    def admit(
        self, user_id: str, estimate_usd: Decimal, now: float | None = None, *, lower: str = "the input size"
    ) -> Reservation:
        """Count one request against the minute window and reserve `estimate_usd` of today's budget.

        Both writes go in one transaction: one round trip, and a refusal changes neither counter.
        A request that could not fit even an unused budget is refused outright (no Retry-After:
        waiting cannot help); `lower` names what the caller can lower on its route.
        """
        now = time.time() if now is None else now
        user_key = hash_user(user_id)
        day = _today(now)
        limit = self.daily_budget - estimate_usd
        if self.daily_budget <= 0:  # spending switched off: exhausted, as on any other spent day
            raise BudgetExceeded(retry_after=_seconds_to_midnight(now))
        if limit < 0:
            raise CostExceedsBudget(
                f"this request could cost up to {estimate_usd:.6f} USD, more than the whole daily budget "
                f"of {self.daily_budget} USD; lower {lower}"
            )
        rate = {
            "TableName": self._table_name,
            "Key": {"id": f"rate#{user_key}#{int(now // 60)}"},
            "UpdateExpression": "ADD requests :one SET expiration = :exp",
            "ConditionExpression": "attribute_not_exists(requests) OR requests < :limit",
            "ExpressionAttributeValues": {":one": 1, ":limit": self.rate_per_minute, ":exp": int(now) + 120},
        }
        budget = {
            "TableName": self._table_name,
            "Key": {"id": f"usage#{user_key}#{day}"},
            "UpdateExpression": "ADD committed_usd :est SET expiration = :exp",
            "ConditionExpression": "attribute_not_exists(committed_usd) OR committed_usd <= :limit",
            "ExpressionAttributeValues": {
                ":est": estimate_usd,
                ":limit": limit,
                ":exp": int(now) + 2 * DAY_SECONDS,
            },
        }
        try:
            # The resource's client takes Python values, like the Table methods.
            self._table.meta.client.transact_write_items(TransactItems=[{"Update": rate}, {"Update": budget}])
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if reasons and reasons[0] == "ConditionalCheckFailed":
                raise RateLimited(retry_after=max(1, 60 - int(now) % 60)) from None
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                raise BudgetExceeded(retry_after=_seconds_to_midnight(now)) from None
            raise InternalError("usage ledger unavailable") from exc
        return Reservation(user_key, day, estimate_usd)

    def settle(self, reservation: Reservation, usage: Usage, costs: Costs, *, feature: str) -> None:
        """Replace the reservation with what the call really cost, and count its tokens, in total
        and per feature (with what the call would have cost without caching and without routing)."""
        counters: dict[str, Decimal | int] = {
            "cost_usd": costs.actual,
            "requests": 1,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "without_caching_usd": costs.without_caching,
            "without_routing_usd": costs.without_routing,
        }
        per_feature = {f"{FEATURE_PREFIX}{feature}#{name}": counters[name] for name in FEATURE_COUNTERS}
        names = {f"#n{i}": name for i, name in enumerate([*counters, *per_feature])}
        values = {f":v{i}": value for i, value in enumerate([*counters.values(), *per_feature.values()])}
        adds = ", ".join(f"{n} {v}" for n, v in zip(names, values, strict=True))
        self._table.update_item(
            Key={"id": f"usage#{reservation.user_key}#{reservation.day}"},
            UpdateExpression=f"ADD committed_usd :delta, {adds}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":delta": costs.actual - reservation.amount, **values},
        )

    def release(self, reservation: Reservation) -> None:
        """A call that cost nothing gives its reservation back."""
        self._table.update_item(
            Key={"id": f"usage#{reservation.user_key}#{reservation.day}"},
            UpdateExpression="ADD committed_usd :delta",
            ExpressionAttributeValues={":delta": -reservation.amount},
        )

    def report(self, user_id: str, now: float | None = None) -> dict[str, Any]:
        """Today's usage, the limits, and what remains: the GET /usage body."""
        now = time.time() if now is None else now
        user_key = hash_user(user_id)
        item = self._table.get_item(Key={"id": f"usage#{user_key}#{_today(now)}"}).get("Item", {})
        rate = self._table.get_item(Key={"id": f"rate#{user_key}#{int(now // 60)}"}).get("Item", {})
        committed = Decimal(str(item.get("committed_usd", 0)))
        used_this_minute = int(str(rate.get("requests", 0)))
        features: dict[str, dict[str, Any]] = {}
        for name, value in item.items():
            if name.startswith(FEATURE_PREFIX):
                feature, _, counter = name[len(FEATURE_PREFIX) :].rpartition("#")
                features.setdefault(feature, {})[counter] = _number(value)
        return {
            "date": _today(now),
            "requests": int(str(item.get("requests", 0))),
            "usage": {
                name: int(str(item.get(name, 0)))
                for name in (
                    "input_tokens",
                    "output_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                )
            },
            "cost_usd": float(Decimal(str(item.get("cost_usd", 0)))),
            # What the same calls would have cost without prompt caching, and with every call on
            # the balanced model (no routing): the difference is what each optimisation saved.
            "without_caching_usd": float(Decimal(str(item.get("without_caching_usd", 0)))),
            "without_routing_usd": float(Decimal(str(item.get("without_routing_usd", 0)))),
            "features": {
                feature: {counter: counters.get(counter, 0) for counter in FEATURE_COUNTERS}
                for feature, counters in sorted(features.items())
            },
            "limits": {
                "requests_per_minute": self.rate_per_minute,
                "daily_budget_usd": float(self.daily_budget),
            },
            "remaining": {
                "requests_this_minute": max(0, self.rate_per_minute - used_this_minute),
                "budget_usd": float(max(Decimal(0), self.daily_budget - committed)),
            },
        }
