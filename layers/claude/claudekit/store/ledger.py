"""Per-user rate limits and daily cost budgets by plan, enforced atomically in DynamoDB.

Concurrency is the hard part: ten requests racing against the last dollar must not
all pass. Each call therefore *reserves* its worst-case cost with a conditional write
before calling Claude, and settles to the real cost afterwards.

Two round trips per call, no more: the admission is one UpdateItem on the user's day item that
counts the minute window and reserves the budget under one condition (and returns the window's
count for the RateLimit headers); the settlement is one transaction. A plan override is read at
most once a minute per instance and user (`OVERRIDE_CACHE_SECONDS`).

Limits come from the caller's plan: its Cognito group names one of `PLANS` (a default plan for
users in none) and a per-user override item can replace either number. The admission hands the
caller's limit state (for the RateLimit headers) to the adapter through the request's `Caller`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

from botocore.exceptions import ClientError

from claudekit.claude.pricing import Usage
from claudekit.errors import BudgetExceeded, CostExceedsBudget, InternalError, RateLimited
from claudekit.store.dynamo import Table, error_code, failed_conditions, from_ddb
from claudekit.telemetry import hash_user

DAY_SECONDS = 86_400
# Users whose stale minute windows this instance remembers, at most.
MAX_STALE_USERS = 10_000
DEFAULT_PLAN = "default"
# An override item is read at most once a minute per instance and user, not on every request.
OVERRIDE_CACHE_SECONDS = 60.0
# Per-user day costs for the operator's top list are spread over this many items (by the first
# hex digit of the hashed id), so no one item grows past DynamoDB's 400 KB with the day's users.
USER_SHARDS = "0123456789abcdef"
# The minute window lives in the user's day item as `w#<minute>` (minute boundaries fall on day
# boundaries). Windows older than the last one are removed by a later admission that saw them.
WINDOW_PREFIX = "w#"
_WINDOW = re.compile(r"^w#(\d+)$")
TOKEN_COUNTERS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

T = TypeVar("T")


def _today(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _seconds_to_midnight(now: float) -> int:
    current = datetime.fromtimestamp(now, UTC)
    midnight = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - current).total_seconds()))


# Per-feature counters live beside the totals as flat attributes `f#<feature>#<counter>`: DynamoDB
# cannot ADD into a map that does not exist yet, and flat names need no first-write special case.
# The day's aggregate item holds the same per model as `m#<model>#<counter>`.
FEATURE_PREFIX = "f#"
MODEL_PREFIX = "m#"
USER_PREFIX = "u#"
FEATURE_COUNTERS = ("requests", "cost_usd", "without_caching_usd", "without_routing_usd")
AGGREGATE_COUNTERS = ("requests", "cost_usd", *TOKEN_COUNTERS)


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
class Plan:
    name: str
    requests_per_minute: int
    daily_budget: Decimal
    overridden: bool = False


@dataclass(frozen=True)
class LimitState:
    """The caller's request window after its admission: what the RateLimit headers say."""

    limit: int
    remaining: int
    reset: int  # seconds until the window starts afresh

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


@dataclass
class Caller:
    """One request's caller: its groups (for the plan) and, once admitted, its limit state.

    The adapter opens one per request (`begin_request`); the ledger finds it in the context of
    the thread that admits. A Lambda instance serves one request at a time, and batch records in
    threads each have their own context, so no two requests share one.
    """

    groups: frozenset[str] = frozenset()
    state: LimitState | None = None

    def headers(self) -> dict[str, str]:
        return self.state.headers() if self.state else {}


_caller: ContextVar[Caller | None] = ContextVar("claudekit_caller", default=None)


@contextmanager
def request(groups: Iterable[str] = ()) -> Iterator[Caller]:
    """One request's caller in the current context (to read its headers after the handler ran);
    the context forgets it afterwards, so nothing admitted later is mistaken for this request."""
    caller = Caller(frozenset(groups))
    token = _caller.set(caller)
    try:
        yield caller
    finally:
        _caller.reset(token)


def bind(caller: Caller, run: Callable[[], T]) -> Callable[[], T]:
    """`run` as a callable that admits as `caller` on whatever thread calls it."""

    def bound() -> T:
        _caller.set(caller)
        return run()

    return bound


def current_caller() -> Caller | None:
    return _caller.get()


def parse_groups(claim: Any) -> list[str]:
    """The `cognito:groups` claim as API Gateway passes it: a list, "a,b" or "[a b]"."""
    if isinstance(claim, list | tuple):
        return [str(g) for g in claim if str(g)]
    text = str(claim or "").strip().strip("[]")
    return [g for g in text.replace(",", " ").split() if g]


@dataclass(frozen=True)
class Reservation:
    user_key: str
    day: str
    amount: Decimal
    state: LimitState | None = field(default=None, compare=False)


class Ledger:
    """Usage counters in the state table: `usage#<user>#<day>` (the day's budget, its minute
    windows and its counters), the day's aggregate `usage-day#<day>` (and its user shards
    `usage-day#<day>#<shard>`), and per-user plan overrides `plan#<user>`."""

    def __init__(
        self,
        table_name: str,
        *,
        rate_per_minute: int,
        daily_budget_usd: float,
        plans: Mapping[str, Mapping[str, Any]] | None = None,
        retention_days: int = 2,
    ) -> None:
        self._table = Table(table_name)
        # user -> minute windows an admission saw that the next one may remove
        self._stale_windows: dict[str, list[str]] = {}
        self._overrides: dict[str, tuple[float, dict[str, Any]]] = {}
        self._overrides_lock = threading.Lock()
        self.rate_per_minute = rate_per_minute
        self.daily_budget = Decimal(str(daily_budget_usd))
        self.retention_days = retention_days
        # RATE_LIMIT_PER_MINUTE and DAILY_BUDGET_USD are the default plan unless PLANS names one.
        self.plans: dict[str, Plan] = {DEFAULT_PLAN: Plan(DEFAULT_PLAN, rate_per_minute, self.daily_budget)}
        for name, limits in (plans or {}).items():
            self.plans[name] = Plan(name, int(limits["requests_per_minute"]), Decimal(str(limits["daily_budget_usd"])))

    # ---- plans ---------------------------------------------------------------------------

    def plan_for(self, user_key: str, groups: Iterable[str], now: float) -> Plan:
        """The override item's plan or numbers, else the last plan in PLANS the user's groups name
        (list plans from least to most generous), else the default plan."""
        member = set(groups)
        named = [name for name in self.plans if name in member and name != DEFAULT_PLAN]
        plan = self.plans[named[-1]] if named else self.plans[DEFAULT_PLAN]
        override = self._override(user_key, now)
        if not override:
            return plan
        base = self.plans.get(str(override.get("plan", "")), plan)
        rpm = override.get("requests_per_minute", base.requests_per_minute)
        budget = override.get("daily_budget_usd", base.daily_budget)
        return Plan(base.name, int(str(rpm)), Decimal(str(budget)), overridden=True)

    def _override(self, user_key: str, now: float) -> dict[str, Any]:
        with self._overrides_lock:
            cached = self._overrides.get(user_key)
        if cached and cached[0] > now:
            return cached[1]
        item = self._table.get(f"plan#{user_key}") or {}
        with self._overrides_lock:
            self._overrides[user_key] = (now + OVERRIDE_CACHE_SECONDS, item)
        return dict(item)

    def set_override(
        self,
        user_id: str,
        *,
        plan: str | None = None,
        requests_per_minute: int | None = None,
        daily_budget_usd: float | None = None,
    ) -> None:
        """Give one user another plan or other numbers (takes effect within a minute everywhere)."""
        item: dict[str, Any] = {"id": f"plan#{hash_user(user_id)}"}
        if plan is not None:
            if plan not in self.plans:
                raise ValueError(f"no plan named {plan!r}")
            item["plan"] = plan
        if requests_per_minute is not None:
            item["requests_per_minute"] = requests_per_minute
        if daily_budget_usd is not None:
            item["daily_budget_usd"] = Decimal(str(daily_budget_usd))
        self._table.put(item)
        with self._overrides_lock:
            self._overrides.pop(hash_user(user_id), None)

    # ---- admission and settlement -------------------------------------------------------

    def admit(
        self, user_id: str, estimate_usd: Decimal, now: float | None = None, *, lower: str = "the input size"
    ) -> Reservation:
        """Count one request against the plan's minute window and reserve `estimate_usd` of today's
        budget in one conditional update of the user's day item, which returns the window's count
        (the RateLimit headers).

        Both limits are one condition, so a refusal changes neither counter and never admits more
        than either limit (a budget refusal never takes its minute slot). A request that could not
        fit even an unused budget is refused outright (no Retry-After: waiting cannot help); `lower`
        names what the caller can lower on its route.
        """
        now = time.time() if now is None else now
        caller = current_caller()
        user_key = hash_user(user_id)
        day = _today(now)
        plan = self.plan_for(user_key, caller.groups if caller else (), now)
        limit = plan.daily_budget - estimate_usd
        if plan.daily_budget <= 0:  # spending switched off: exhausted, as on any other spent day
            raise BudgetExceeded(retry_after=_seconds_to_midnight(now))
        if limit < 0:
            raise CostExceedsBudget(
                f"this request could cost up to {estimate_usd:.6f} USD, more than the whole daily budget "
                f"of {plan.daily_budget} USD; lower {lower}"
            )
        reset = max(1, 60 - int(now) % 60)
        minute = int(now // 60)
        stale = [w for w in self._stale_windows.pop(user_key, []) if w != f"{WINDOW_PREFIX}{minute}"]
        names = {"#w": f"{WINDOW_PREFIX}{minute}", "#plan": "plan", **{f"#s{i}": w for i, w in enumerate(stale)}}
        remove = (" REMOVE " + ", ".join(f"#s{i}" for i in range(len(stale)))) if stale else ""
        try:
            item = self._table.update(
                f"usage#{user_key}#{day}",
                "ADD #w :one, committed_usd :est SET expiration = :exp, #plan = :plan" + remove,
                condition=(
                    "(attribute_not_exists(#w) OR #w < :rpm) "
                    "AND (attribute_not_exists(committed_usd) OR committed_usd <= :limit)"
                ),
                names=names,
                values={
                    ":one": 1,
                    ":est": estimate_usd,
                    ":rpm": plan.requests_per_minute,
                    ":limit": limit,
                    ":exp": self._expiration(day),
                    ":plan": plan.name,
                },
                returns="ALL_NEW",
                returns_on_failure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise InternalError("usage ledger unavailable") from exc
            old = from_ddb(cast(dict[str, Any], exc.response.get("Item") or {}))
            used = int(str(old.get(f"{WINDOW_PREFIX}{minute}", 0)))
            if used >= plan.requests_per_minute:
                self._record(caller, LimitState(plan.requests_per_minute, 0, reset))
                raise RateLimited(retry_after=reset) from None
            self._record(caller, LimitState(plan.requests_per_minute, plan.requests_per_minute - used, reset))
            raise BudgetExceeded(retry_after=_seconds_to_midnight(now)) from None
        self._remember_stale(user_key, item, minute)
        used = int(str(item[f"{WINDOW_PREFIX}{minute}"]))
        state = LimitState(plan.requests_per_minute, max(0, plan.requests_per_minute - used), reset)
        self._record(caller, state)
        return Reservation(user_key, day, estimate_usd, state)

    def _remember_stale(self, user_key: str, item: Mapping[str, Any], minute: int) -> None:
        """Windows before the last one are over; the user's next admission here removes them, so
        the day item stays small. (The last one stays: another instance's clock may still be in it.)"""
        stale = [name for name in item if (m := _WINDOW.match(name)) and int(m.group(1)) < minute - 1]
        if stale:
            if len(self._stale_windows) > MAX_STALE_USERS:  # a bound, not a cache: losing it costs nothing
                self._stale_windows.clear()
            self._stale_windows[user_key] = stale

    @staticmethod
    def _record(caller: Caller | None, state: LimitState) -> None:
        if caller is not None:
            caller.state = state

    def _expiration(self, day: str) -> int:
        """Day items are kept `retention_days` after their day ends (USAGE_RETENTION_DAYS)."""
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
        return int((start + timedelta(days=1 + self.retention_days)).timestamp())

    def settle(
        self,
        reservation: Reservation,
        usage: Usage,
        costs: Costs,
        *,
        feature: str,
        model: str = "",
        also: Sequence[Mapping[str, Any]] = (),
        token: str | None = None,
    ) -> bool:
        """Replace the reservation with what the call really cost, and count its tokens, in total
        and per feature (with what the call would have cost without caching and without routing);
        and add the call to the day's aggregate for the operator's report (per feature, per model,
        per user), all in one transaction so a retried settle never counts a part twice: a caller
        that retries passes the same `token` (32 characters at most) to every attempt, which
        DynamoDB then applies once even if an earlier attempt's answer was lost.

        `also`: more TransactWriteItems entries written in the same transaction (a job's result
        with its status), so they cost no round trip of their own. The call was made whatever they
        hold, so if one of their conditions fails the settlement is written alone: False then,
        True when everything was written."""
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
        per_feature = {
            f"{FEATURE_PREFIX}{feature}#{name}": counters[name] for name in (*FEATURE_COUNTERS, *TOKEN_COUNTERS)
        }
        user = _adds({**counters, **per_feature})
        user["UpdateExpression"] = f"ADD committed_usd :delta, {user['UpdateExpression'][4:]}"
        user["ExpressionAttributeValues"][":delta"] = costs.actual - reservation.amount
        aggregate = _adds(
            {
                **{name: counters[name] for name in AGGREGATE_COUNTERS},
                **{f"{FEATURE_PREFIX}{feature}#{name}": counters[name] for name in AGGREGATE_COUNTERS},
                **{f"{MODEL_PREFIX}{model or 'unknown'}#{name}": counters[name] for name in AGGREGATE_COUNTERS},
            }
        )
        shard = _adds({f"{USER_PREFIX}{reservation.user_key}": costs.actual})
        expiration = self._expiration(reservation.day)
        items = [
            (f"usage#{reservation.user_key}#{reservation.day}", user),
            (f"usage-day#{reservation.day}", aggregate),
            (f"usage-day#{reservation.day}#{reservation.user_key[0]}", shard),
        ]
        updates = [
            self._table.update_request(
                key,
                update["UpdateExpression"] + " SET expiration = :exp",
                names=update["ExpressionAttributeNames"],
                values={**update["ExpressionAttributeValues"], ":exp": expiration},
            )
            for key, update in items
        ]
        # A token names one payload: the settlement alone and with `also` each get their own.
        alone, riding = (f"{token}a", f"{token}r") if token else (None, None)
        if not also:
            self._table.transact(updates, token=alone)
            return True
        try:
            extra = {"ClientRequestToken": riding} if riding else {}
            self._table.client.transact_write_items(TransactItems=[*({"Update": u} for u in updates), *also], **extra)
        except ClientError as exc:
            # The usage updates have no condition: a failed condition is one of `also`'s.
            if not failed_conditions(exc):
                raise
            self._table.transact(updates, token=alone)
            return False
        return True

    def release(self, reservation: Reservation) -> None:
        """A call that cost nothing gives its reservation back."""
        self._table.update(
            f"usage#{reservation.user_key}#{reservation.day}",
            "ADD committed_usd :delta",
            values={":delta": -reservation.amount},
        )

    # ---- reports -------------------------------------------------------------------------

    def report(self, user_id: str, now: float | None = None, *, day: date | None = None) -> dict[str, Any]:
        """A day's usage (today unless `day`), the plan and its limits, and what remains: the
        GET /usage body. The minute window and the remaining budget are today's."""
        now = time.time() if now is None else now
        user_key = hash_user(user_id)
        today = _today(now)
        wanted = day.isoformat() if day else today
        caller = current_caller()
        plan = self.plan_for(user_key, caller.groups if caller else (), now)
        item = self._table.get(f"usage#{user_key}#{wanted}") or {}
        todays = item if wanted == today else self._table.get(f"usage#{user_key}#{today}") or {}
        committed = Decimal(str(todays.get("committed_usd", 0)))
        used_this_minute = int(str(todays.get(f"{WINDOW_PREFIX}{int(now // 60)}", 0)))
        return {
            "date": wanted,
            **_totals(item, ("requests", "cost_usd", "without_caching_usd", "without_routing_usd")),
            "features": {
                feature: {
                    **{counter: counters.get(counter, 0) for counter in FEATURE_COUNTERS},
                    "usage": {name: int(counters.get(name, 0)) for name in TOKEN_COUNTERS},
                }
                for feature, counters in sorted(_grouped(item, FEATURE_PREFIX).items())
            },
            "plan": plan.name,
            "plan_overridden": plan.overridden,
            "limits": {
                "requests_per_minute": plan.requests_per_minute,
                "daily_budget_usd": float(plan.daily_budget),
            },
            "remaining": {
                "requests_this_minute": max(0, plan.requests_per_minute - used_this_minute),
                "budget_usd": float(max(Decimal(0), plan.daily_budget - committed)),
            },
        }

    def operator_report(self, day: date, *, top: int = 10) -> dict[str, Any]:
        """Everyone's usage on `day`: totals, per feature, per model, and the top users by cost
        (hashed ids, as in the logs). Reads the day's aggregate and its 16 user shards in one batch,
        never the whole table."""
        key = f"usage-day#{day.isoformat()}"
        items = self._table.get_many([key, *(f"{key}#{shard}" for shard in USER_SHARDS)])
        if items is None:
            raise InternalError("usage ledger unavailable")
        item = items.get(key, {})
        users = [
            (name[len(USER_PREFIX) :], Decimal(str(value)))
            for shard in USER_SHARDS
            for name, value in items.get(f"{key}#{shard}", {}).items()
            if name.startswith(USER_PREFIX)
        ]
        users.sort(key=lambda pair: (-pair[1], pair[0]))
        return {
            "date": day.isoformat(),
            **_totals(item, ("requests", "cost_usd")),
            "features": _breakdown(item, FEATURE_PREFIX),
            "models": _breakdown(item, MODEL_PREFIX),
            "users": len(users),
            "top_users": [{"user": user, "cost_usd": float(cost)} for user, cost in users[:top]],
        }


def _adds(counters: Mapping[str, Decimal | int]) -> dict[str, Any]:
    """One `ADD` clause over `counters`, with placeholder names (attribute names hold `#`)."""
    names = {f"#n{i}": name for i, name in enumerate(counters)}
    values = {f":v{i}": value for i, value in enumerate(counters.values())}
    return {
        "UpdateExpression": "ADD " + ", ".join(f"{n} {v}" for n, v in zip(names, values, strict=True)),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def _totals(item: Mapping[str, Any], money_and_count: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in money_and_count:
        out[name] = int(str(item.get(name, 0))) if name == "requests" else float(Decimal(str(item.get(name, 0))))
    out["usage"] = {name: int(str(item.get(name, 0))) for name in TOKEN_COUNTERS}
    return out


def _grouped(item: Mapping[str, Any], prefix: str) -> dict[str, dict[str, int | float]]:
    groups: dict[str, dict[str, int | float]] = {}
    for name, value in item.items():
        if name.startswith(prefix):
            group, _, counter = name[len(prefix) :].rpartition("#")
            groups.setdefault(group, {})[counter] = _number(value)
    return groups


def _breakdown(item: Mapping[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    return {
        group: {
            "requests": int(counters.get("requests", 0)),
            "cost_usd": float(counters.get("cost_usd", 0)),
            "usage": {name: int(counters.get(name, 0)) for name in TOKEN_COUNTERS},
        }
        for group, counters in sorted(_grouped(item, prefix).items())
    }
