"""What a call may cost (reserved before it), what it did cost (settled after it), and the
metrics and log lines of both outcomes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from tenacity import Retrying, stop_after_attempt, wait_exponential

from claudekit.claude.pricing import (
    ModelPrices,
    cost_usd,
    cost_without_caching,
    price_table,
    utc_date,
    worst_case_usd,
)
from claudekit.claude.request import Call, ClaudeRequest, ClaudeResult
from claudekit.errors import ClaudeError, ConfigurationError, UpstreamTimeout
from claudekit.settings import Settings
from claudekit.store.ledger import Costs, Ledger, Reservation
from claudekit.telemetry import emit_error, emit_metrics, hash_user, logger

# Routes whose callers choose max_tokens: what to lower when a request could never fit the budget.
CALLER_SETS_MAX_TOKENS = frozenset({"generate", "stream"})
SETTLE_ATTEMPTS = 3


@dataclass
class Rider:
    """Writes that ride on a call's settlement, in its one transaction (a job's result and status).

    `items` builds them from the call's priced result; an empty list means nothing rides on this
    call. `written` says afterwards whether they were written; they ride at most once.
    """

    items: Callable[[ClaudeResult], list[dict[str, Any]]]
    written: bool = False


_rider: ContextVar[Rider | None] = ContextVar("claudekit_rider", default=None)


@contextmanager
def riding(rider: Rider) -> Iterator[Rider]:
    """Settlements in this context carry `rider`'s writes (until they are written once)."""
    token = _rider.set(rider)
    try:
        yield rider
    finally:
        _rider.reset(token)


class Accounting:
    """Prices, the ledger, and the reservation -> settle (or release) cycle of every call."""

    def __init__(self, settings: Settings, ledger: Ledger | None = None) -> None:
        self.settings = settings
        self.prices = price_table(settings.pricing_json)
        for model in (settings.model_fast, settings.model_balanced, settings.model_deep, settings.model_fallback):
            if model and model not in self.prices:
                raise ConfigurationError(
                    f"invalid configuration: no price for model {model!r} (add its row with PRICING_JSON)"
                )
        self.ledger = ledger or Ledger(
            settings.table_name,
            rate_per_minute=settings.rate_limit_per_minute,
            daily_budget_usd=settings.daily_budget_usd,
            plans={name: plan.model_dump() for name, plan in settings.plans.items()},
            retention_days=settings.usage_retention_days,
        )

    def price(self, model: str) -> ModelPrices:
        """The model's row; a model upstream reports that we have no row for (never one we send:
        those are checked at init) is billed at the dearest row, never at $0."""
        row = self.prices.get(model)
        if row is None:
            logger.warning("no price for the model upstream reported; billing the dearest row", extra={"model": model})
            row = max(self.prices.values(), key=lambda p: p.periods[-1].output)
        return row

    def min_cache_tokens(self, model: str) -> int:
        return self.price(model).min_cache_tokens

    def admit(self, request: ClaudeRequest, call: Call) -> Reservation:
        """Reserve the worst case (see `worst_case`); a request that could never fit is refused
        saying what the caller of that route can lower."""
        lower = "max_tokens or the input size" if request.feature in CALLER_SETS_MAX_TOKENS else "the input size"
        return self.ledger.admit(request.user_id, self.worst_case(call), lower=lower)

    def worst_case(self, call: Call, *, batch: bool = False) -> Decimal:
        """An upper bound on the call's cost: the prompt bound, its cacheable prefix at the dearest
        cache rate, all of max_tokens, at the long-prompt tier if the prompt could cross it; on the
        dearer of the routed and the fallback model, since either may answer."""
        models = {call.model, self.settings.model_fallback or call.model}
        return max(
            worst_case_usd(
                self.price(model),
                on=call.day,
                prompt_tokens=call.prompt_tokens,
                cacheable_tokens=call.cacheable_tokens,
                output_tokens=call.max_tokens,
                batch=batch,
            )
            for model in models
        )

    def costs(self, result: ClaudeResult, day: date, *, batch: bool = False) -> Costs:
        """The call's cost at the prices in force on `day`, and what it would have cost without
        prompt caching and without routing (the same usage on the balanced model)."""
        ttl = self.settings.cache_ttl
        return Costs(
            actual=cost_usd(result.usage, self.price(result.model), on=day, cache_ttl=ttl, batch=batch),
            without_caching=cost_without_caching(result.usage, self.price(result.model), on=day, batch=batch),
            without_routing=cost_usd(
                result.usage, self.price(self.settings.model_balanced), on=day, cache_ttl=ttl, batch=batch
            ),
        )

    def settle(
        self,
        request: ClaudeRequest,
        reservation: Reservation,
        result: ClaudeResult,
        *,
        latency: float,
        extra: dict[str, tuple[float, MetricUnit]] | None = None,
        batch: bool = False,
        day: date | None = None,
    ) -> None:
        """Record what a call cost; `batch`: a Message Batches result (batch rate, no latency).
        The context's `Rider` (if any) writes in the same transaction.

        Never raises: the answer is paid for, so the caller gets it even if the ledger cannot be
        written (retried first). Then the usage is logged for reconciliation with a
        `UsageNotRecorded` metric (alarmed), and the reservation stays held against the budget.
        """
        costs = self.costs(result, day or utc_date(), batch=batch)
        result.cost_usd = costs.actual
        u = result.usage
        rider = _rider.get()
        try:
            also = rider.items(result) if rider is not None and not rider.written else []
        except Exception:  # the settlement comes first: the rider's writes then go their own way
            logger.exception("writes riding on a settlement could not be built")
            also = []
        token = uuid.uuid4().hex  # one for every attempt: a written settlement is never written twice
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(SETTLE_ATTEMPTS), wait=wait_exponential(multiplier=0.05, max=0.5), reraise=True
            ):
                with attempt:
                    written = self.ledger.settle(
                        reservation, u, costs, feature=request.feature, model=result.model, also=also, token=token
                    )
            if rider is not None and also:
                rider.written = written
        except Exception as exc:
            logger.error(
                "usage not recorded; reconcile it",
                extra={
                    "request_id": logger.get_correlation_id(),
                    "upstream_request_id": result.request_id,
                    "feature": request.feature,
                    "model": result.model,
                    "user": hash_user(request.user_id),
                    "day": reservation.day,
                    "usage": u.public(),
                    "cost_usd": str(costs.actual),
                    "reserved_usd": str(reservation.amount),
                    "error_type": type(exc).__name__,
                },
            )
            emit_metrics(
                self.settings.powertools_metrics_namespace,
                feature=request.feature,
                model=result.model,
                values={"UsageNotRecorded": (1, MetricUnit.Count)},
            )
        values: dict[str, tuple[float, MetricUnit]] = {
            "InputTokens": (u.input_tokens, MetricUnit.Count),
            "OutputTokens": (u.output_tokens, MetricUnit.Count),
            "CacheReadTokens": (u.cache_read_input_tokens, MetricUnit.Count),
            "CacheWriteTokens": (u.cache_creation_input_tokens, MetricUnit.Count),
            "CostUSD": (float(result.cost_usd), MetricUnit.NoUnit),
        }
        if not batch:
            values["Latency"] = (latency * 1000, MetricUnit.Milliseconds)
            values["Retries"] = (max(0, result.attempts - 1), MetricUnit.Count)
        emit_metrics(
            self.settings.powertools_metrics_namespace,
            feature=request.feature,
            model=result.model,
            values={**values, **(extra or {})},
        )
        logger.info(
            "claude call",
            extra={
                "feature": request.feature,
                "model": result.model,
                "user": hash_user(request.user_id),
                "stop_reason": result.stop_reason,
                "attempts": result.attempts,
                "usage": u.public(),
                "cost_usd": float(result.cost_usd),
                "cost_without_caching_usd": float(costs.without_caching),
                "cost_without_routing_usd": float(costs.without_routing),
                "latency_ms": None if batch else round(latency * 1000),
                "batch": batch,
            },
        )

    def release(
        self, request: ClaudeRequest, reservation: Reservation, model: str, exc: ClaudeError, attempts: int
    ) -> None:
        """A call that cost nothing: give its reservation back and record the failure."""
        self.ledger.release(reservation)
        self.record_failure(request, model, exc, attempts)

    def record_failure(self, request: ClaudeRequest, model: str, exc: ClaudeError, attempts: int) -> None:
        emit_error(self.settings.powertools_metrics_namespace, feature=request.feature, model=model, code=exc.code)
        log = logger.error if exc.status >= 500 and not isinstance(exc, UpstreamTimeout) else logger.warning
        log(
            "claude call failed",
            extra={
                "feature": request.feature,
                "model": model,
                "user": hash_user(request.user_id),
                "code": exc.code,
                "attempts": attempts,
            },
        )
