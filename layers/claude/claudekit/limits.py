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

from claudekit.errors import BudgetExceeded, InternalError, RateLimited
from claudekit.telemetry import hash_user
from claudekit.usage import Usage

DAY_SECONDS = 86_400


def _today(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _seconds_to_midnight(now: float) -> int:
    current = datetime.fromtimestamp(now, UTC)
    midnight = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - current).total_seconds()))


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

    def admit(self, user_id: str, estimate_usd: Decimal, now: float | None = None) -> Reservation:
        """Count one request against the minute window and reserve `estimate_usd` of today's budget.

        Both writes go in one transaction: one round trip, and a refusal changes neither counter.
        """
        now = time.time() if now is None else now
        user_key = hash_user(user_id)
        day = _today(now)
        limit = self.daily_budget - estimate_usd
        if limit < 0:
            raise BudgetExceeded(
                "this request could cost more than the whole daily budget; lower max_tokens",
                retry_after=_seconds_to_midnight(now),
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
            "ExpressionAttributeValues": {":est": estimate_usd, ":limit": limit, ":exp": int(now) + 2 * DAY_SECONDS},
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

    def settle(self, reservation: Reservation, usage: Usage, cost: Decimal) -> None:
        """Replace the reservation with what the call really cost, and count its tokens."""
        self._table.update_item(
            Key={"id": f"usage#{reservation.user_key}#{reservation.day}"},
            UpdateExpression=(
                "ADD committed_usd :delta, cost_usd :cost, requests :one, input_tokens :in, "
                "output_tokens :out, cache_creation_input_tokens :cw, cache_read_input_tokens :cr"
            ),
            ExpressionAttributeValues={
                ":delta": cost - reservation.amount,
                ":cost": cost,
                ":one": 1,
                ":in": usage.input_tokens,
                ":out": usage.output_tokens,
                ":cw": usage.cache_creation_input_tokens,
                ":cr": usage.cache_read_input_tokens,
            },
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
            "limits": {
                "requests_per_minute": self.rate_per_minute,
                "daily_budget_usd": float(self.daily_budget),
            },
            "remaining": {
                "requests_this_minute": max(0, self.rate_per_minute - used_this_minute),
                "budget_usd": float(max(Decimal(0), self.daily_budget - committed)),
            },
        }
