"""The careful Claude client every function shares.

One call goes: caps -> rate limit and budget reservation -> circuit breaker -> retry loop
(-> one key refresh on 401) -> model fallback on overload -> usage, cost, metrics, logs.
The client never knows which adapter called it; adapters never talk to the SDK.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

import anthropic
from anthropic.resources.messages.batches import Batches
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.circuit_breaker import (
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    CircuitTransition,
    circuit_breaker,
)
from pydantic import BaseModel, ValidationError
from tenacity import Retrying, stop_after_attempt, wait_exponential

from claudekit.claude import secret
from claudekit.claude.pricing import (
    ModelPrices,
    Usage,
    cost_usd,
    cost_without_caching,
    price_table,
    utc_date,
    worst_case_usd,
)
from claudekit.claude.retry import MIN_ATTEMPT_SECONDS, call_with_retry, classify
from claudekit.claude.routing import max_tokens_for, model_for
from claudekit.deadline import Deadline
from claudekit.errors import (
    BREAKER_FAILURES,
    CircuitOpen,
    ClaudeError,
    ConfigurationError,
    InputTooLarge,
    InternalError,
    SpendLimitReached,
    StructuredOutputError,
    UpstreamAuth,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from claudekit.settings import Settings, get_settings
from claudekit.store.breaker import CircuitStore, FleetFailures
from claudekit.store.cooldown import REFRESH_SECONDS, Cooldowns
from claudekit.store.ledger import Costs, Ledger, Reservation
from claudekit.telemetry import emit_error, emit_metrics, hash_user, logger

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

CHARS_PER_TOKEN = 4  # typical English; only decides whether a system prompt is worth marking for caching
# Tokens never exceed the UTF-8 bytes of the text (byte-level BPE), plus a few per message for the
# role and separators the API adds: bytes + this per message is a true upper bound for reservations.
MESSAGE_OVERHEAD_TOKENS = 16
# Routes whose callers choose max_tokens: what to lower when a request could never fit the budget.
CALLER_SETS_MAX_TOKENS = frozenset({"generate", "stream"})
SETTLE_ATTEMPTS = 3


@dataclass
class ClaudeRequest:
    """What a task asks of Claude. `feature` is the metrics dimension, `task` picks the model."""

    feature: str
    task: str
    user_id: str
    prompt: str
    system: str | None = None
    max_tokens: int | None = None
    output_schema: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # A multi-turn conversation: mark the last user turn of `history` and the prompt for caching
    # (see `_cache_turns`), so each turn reads what the previous one wrote.
    cache_turns: bool = False
    # Longest retry-after to sleep through inside the call; longer waits are raised to the caller
    # (the batch consumer hands them to SQS visibility instead of paying Lambda time to wait).
    max_retry_wait: float | None = None


@dataclass
class ClaudeResult:
    text: str
    model: str
    stop_reason: str | None
    usage: Usage
    cost_usd: Decimal
    request_id: str | None
    attempts: int

    @property
    def truncated(self) -> bool:
        return self.stop_reason == "max_tokens"


@dataclass
class Delta:
    """A piece of streamed text."""

    text: str


@dataclass
class _Attempts:
    """Upstream attempts of one logical call, across retries and the fallback model."""

    count: int = 0


@dataclass
class _Call:
    """The SDK parameters for one request, after caps and routing, and the bounds it is reserved at."""

    model: str
    params: dict[str, Any]
    input_chars: int
    prompt_tokens: int  # upper bound: UTF-8 bytes of everything sent + MESSAGE_OVERHEAD_TOKENS per message
    cacheable_tokens: int  # upper bound on the prefix marked for caching (the system prompt)
    day: date  # the prices in force on this (UTC) date apply
    max_retry_wait: float | None = None


class ClaudeClient:
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
        self._cooldowns = Cooldowns(settings.table_name, max_seconds=settings.cooldown_max_seconds)
        self._breaker_store = CircuitStore(settings.table_name, cooldowns=self._cooldowns)
        self._breaker_config = CircuitBreakerConfig(
            failure_threshold=settings.breaker_failure_threshold,
            recovery_timeout=settings.breaker_recovery_seconds,
            success_threshold=1,
            handled_exceptions=BREAKER_FAILURES,
            # Other instances learn of a trip within REFRESH_SECONDS; a closed circuit costs no read per call.
            local_cache_max_age=REFRESH_SECONDS,
        )
        self._fleet = FleetFailures(settings.table_name, window_seconds=settings.breaker_window_seconds)
        self._opened: dict[str, int] = {}  # circuit -> opened_at, as this instance saw it trip
        self._failures: dict[str, int] = {}  # circuit -> consecutive health failures seen here
        self._sdk: anthropic.Anthropic | None = None
        self._sdk_key: str | None = None
        self._lock = threading.Lock()

    # ---- public API -------------------------------------------------------------------

    def complete(self, request: ClaudeRequest, deadline: Deadline) -> ClaudeResult:
        """One non-streaming call with every safeguard; raises ClaudeError."""
        call = self._prepare(request)
        reservation = self._admit(request, call)
        started = time.monotonic()
        attempts = _Attempts()

        def create(model: str, timeout: float) -> ClaudeResult:
            return self._create(model, timeout, call.params)

        try:
            result: ClaudeResult = self._with_fallback(call, deadline, create, attempts)
        except ClaudeError as exc:
            self.ledger.release(reservation)
            self._record_failure(request, call.model, exc, attempts.count)
            raise
        result.attempts = attempts.count
        self._settle(request, reservation, result, latency=time.monotonic() - started, day=call.day)
        return result

    def complete_structured(
        self, request: ClaudeRequest, output: type[M], deadline: Deadline
    ) -> tuple[M, ClaudeResult]:
        """Ask for JSON matching `output`, validate it with pydantic, and allow one repair attempt."""
        request.output_schema = output_schema(output)
        result = self.complete(request, deadline)
        try:
            return output.model_validate_json(result.text), result
        except ValidationError as exc:
            problem = _describe(exc)
        logger.warning("structured output invalid; one repair attempt", extra={"feature": request.feature})
        repair = ClaudeRequest(
            feature=request.feature,
            task=request.task,
            user_id=request.user_id,
            system=request.system,
            max_tokens=request.max_tokens,
            output_schema=request.output_schema,
            prompt=f"Your previous reply was invalid ({problem}). Reply again with only the corrected JSON.",
            history=[
                *request.history,
                {"role": "user", "content": request.prompt},
                {"role": "assistant", "content": result.text},
            ],
        )
        second = self.complete(repair, deadline)
        try:
            parsed = output.model_validate_json(second.text)
        except ValidationError:
            self._record_failure(request, second.model, StructuredOutputError(), second.attempts)
            raise StructuredOutputError() from None
        # The caller's one request paid for both calls (each settled on its own): report both.
        second.usage = result.usage + second.usage
        second.cost_usd += result.cost_usd
        second.attempts += result.attempts
        return parsed, second

    def stream(self, request: ClaudeRequest, deadline: Deadline) -> Iterator[Delta | ClaudeResult]:
        """Yield Delta pieces as they arrive, then the final ClaudeResult.

        Failures before the first delta are retried like `complete` and raised as ClaudeError
        before anything is yielded; after it they are raised mid-iteration (never retried:
        the client already has part of the answer). Closing the generator early closes the
        upstream connection at once. Usage is recorded on every path.
        """
        call = self._prepare(request)
        reservation = self._admit(request, call)
        started = time.monotonic()
        attempts = _Attempts()

        def open_stream(model: str, timeout: float) -> _OpenStream:
            events = self._client().messages.create(model=model, stream=True, timeout=timeout, **call.params)
            stream = _OpenStream(events, max_tokens=int(call.params["max_tokens"]))
            try:
                stream.read_until_text()
            except BaseException:
                stream.close()
                raise
            return stream

        try:
            upstream: _OpenStream = self._with_fallback(call, deadline, open_stream, attempts)
        except ClaudeError as exc:
            self.ledger.release(reservation)
            self._record_failure(request, call.model, exc, attempts.count)
            raise
        first_token = time.monotonic() - started
        failure: ClaudeError | None = None
        try:
            for piece in upstream.pieces(deadline):
                yield Delta(piece)
        except ClaudeError as exc:
            failure = exc
            raise
        except Exception as exc:  # an SDK error mid-stream
            failure = classify(exc)
            raise failure from exc
        finally:
            upstream.close()
            result = upstream.result(call.model, attempts=attempts.count)
            extra = {"TimeToFirstToken": (first_token * 1000, MetricUnit.Milliseconds)}
            extra["StreamDuration"] = ((time.monotonic() - started) * 1000, MetricUnit.Milliseconds)
            self._settle(request, reservation, result, latency=time.monotonic() - started, extra=extra, day=call.day)
            if failure is not None:
                self._record_failure(request, result.model, failure, attempts.count)
        yield result

    # ---- Message Batches (the caller reserves, submits, polls and settles) -------------------

    def batch_params(self, request: ClaudeRequest) -> tuple[dict[str, Any], Decimal]:
        """`params` for one Message Batches request, built exactly as `complete` builds a call
        (caps, routing, caching; the model included), and its worst-case cost at the batch rate."""
        call = self._prepare(request)
        return {"model": call.model, **call.params}, self._worst_case(call, batch=True)

    def batches(self, operation: Callable[[Batches, float], T], deadline: Deadline, *, retry: bool = True) -> T:
        """Run `operation(sdk.messages.batches, timeout)`; what escapes is a ClaudeError.

        Reads are retried like a call (`retry`); creating a batch is not idempotent, so its caller
        passes retry=False rather than risk two batches. A rejected key is refreshed once.
        """
        s = self.settings

        def run() -> T:
            return call_with_retry(
                lambda timeout: operation(self._client().messages.batches, timeout),
                deadline=deadline,
                max_attempts=s.retry_max_attempts if retry else 1,
                base_delay=s.retry_base_delay_seconds,
                max_delay=s.retry_max_delay_seconds,
                max_attempt_seconds=s.request_timeout_seconds,
            )

        return self._refreshing_key(run)

    def batch_result(self, message: Any, on: str | None = None) -> ClaudeResult:
        """A succeeded batch request's Message as a ClaudeResult, its cost at the batch rate in
        force on `on` (the ISO date the batch was reserved; today if unknown). A result whose
        usage is malformed raises UpstreamMalformed."""
        with _malformed_is_upstream_error():
            result = _result_of(message, str(message.model))
        result.cost_usd = self._costs(result, _day(on), batch=True).actual
        return result

    def settle_batch(self, request: ClaudeRequest, reservation: Reservation, result: ClaudeResult) -> None:
        """Charge one batch result: its cost at the batch rate replaces `reservation`, with the
        metrics and log line of a call (no Latency: a batch's hours would swamp the percentiles)."""
        self._settle(request, reservation, result, latency=0.0, batch=True, day=_day(reservation.day))

    def release_batch(self, request: ClaudeRequest, reservation: Reservation, model: str, exc: ClaudeError) -> None:
        """A batch request that cost nothing (errored, expired, canceled): give back its reservation."""
        self.ledger.release(reservation)
        self._record_failure(request, model, exc, attempts=1)

    # ---- request building ---------------------------------------------------------------

    def _prepare(self, request: ClaudeRequest) -> _Call:
        s = self.settings
        input_chars = len(request.prompt) + len(request.system or "")
        input_chars += sum(len(str(m.get("content", ""))) for m in request.history)
        if input_chars > s.max_input_chars:
            raise InputTooLarge(f"input is {input_chars} characters; the limit is {s.max_input_chars}")
        model = model_for(request.task, s)
        messages = [*request.history, {"role": "user", "content": request.prompt}]
        if request.cache_turns:
            messages = _cache_turns(messages, s.cache_ttl)
        params: dict[str, Any] = {
            "max_tokens": max_tokens_for(request.task, request.max_tokens, s),
            "messages": messages,
        }
        pieces = [_utf8_bytes(m.get("content", "")) for m in messages]
        cacheable = 0
        if request.system:
            block: dict[str, Any] = {"type": "text", "text": request.system}
            pieces.append(_utf8_bytes(request.system))
            # Below the model's minimum cacheable length cache_control silently does nothing.
            if len(request.system) // CHARS_PER_TOKEN >= self._price(model).min_cache_tokens:
                block["cache_control"] = {"type": "ephemeral", "ttl": s.cache_ttl}
                cacheable = pieces[-1] + MESSAGE_OVERHEAD_TOKENS
            params["system"] = [block]
        if request.output_schema is not None:
            params["output_config"] = {"format": {"type": "json_schema", "schema": request.output_schema}}
            pieces.append(_utf8_bytes(request.output_schema))
        prompt_tokens = sum(pieces) + MESSAGE_OVERHEAD_TOKENS * len(pieces)
        return _Call(
            model=model,
            params=params,
            input_chars=input_chars,
            prompt_tokens=prompt_tokens,
            # With turns marked, all of the prompt may be written to cache.
            cacheable_tokens=prompt_tokens if request.cache_turns else cacheable,
            day=utc_date(),
            max_retry_wait=request.max_retry_wait,
        )

    def _price(self, model: str) -> ModelPrices:
        """The model's row; a model upstream reports that we have no row for (never one we send:
        those are checked at init) is billed at the dearest row, never at $0."""
        row = self.prices.get(model)
        if row is None:
            logger.warning("no price for the model upstream reported; billing the dearest row", extra={"model": model})
            row = max(self.prices.values(), key=lambda p: p.periods[-1].output)
        return row

    def _admit(self, request: ClaudeRequest, call: _Call) -> Reservation:
        """Reserve the worst case (see `_worst_case`); a request that could never fit is refused
        saying what the caller of that route can lower."""
        lower = "max_tokens or the input size" if request.feature in CALLER_SETS_MAX_TOKENS else "the input size"
        return self.ledger.admit(request.user_id, self._worst_case(call), lower=lower)

    def _worst_case(self, call: _Call, *, batch: bool = False) -> Decimal:
        """An upper bound on the call's cost: the prompt bound, its cacheable prefix at the dearest
        cache rate, all of max_tokens, at the long-prompt tier if the prompt could cross it; on the
        dearer of the routed and the fallback model, since either may answer."""
        models = {call.model, self.settings.model_fallback or call.model}
        return max(
            worst_case_usd(
                self._price(model),
                on=call.day,
                prompt_tokens=call.prompt_tokens,
                cacheable_tokens=call.cacheable_tokens,
                output_tokens=int(call.params["max_tokens"]),
                batch=batch,
            )
            for model in models
        )

    # ---- the call itself ----------------------------------------------------------------

    def _client(self, refresh: bool = False) -> anthropic.Anthropic:
        """One SDK client per container, rebuilt only when the key changes."""
        key = secret.get_api_key(
            self.settings.claude_secret_id, max_age=self.settings.secret_max_age_seconds, refresh=refresh
        )
        with self._lock:
            if self._sdk is None or key != self._sdk_key:
                self._sdk = anthropic.Anthropic(
                    api_key=key, base_url=self.settings.anthropic_base_url, max_retries=0, open_telemetry=False
                )
                self._sdk_key = key
            return self._sdk

    def _create(self, model: str, timeout: float, params: dict[str, Any]) -> ClaudeResult:
        client = self._client()
        # Building and sending the request raise as themselves (an unencodable string is our
        # caller's input, not upstream's); only reading the answer can be upstream's malformed reply.
        raw = client.messages.with_raw_response.create(model=model, timeout=timeout, **params)
        with _malformed_is_upstream_error():
            return _result_of(raw.parse(), model)

    def _refreshing_key(self, run: Callable[[], T]) -> T:
        """Run; on an upstream 401 the key may have been rotated: refresh it once and run once more."""
        try:
            return run()
        except UpstreamAuth:
            logger.error("upstream rejected our API key; refreshing the secret once")
            self._client(refresh=True)
            try:
                return run()
            except UpstreamAuth:
                logger.critical("upstream still rejects the API key: fix the secret")
                raise

    def _with_fallback(
        self, call: _Call, deadline: Deadline, attempt: Callable[[str, float], Any], attempts: _Attempts
    ) -> Any:
        """Try the routed model; if it stays unavailable, try the fallback model once.

        Not for a spend limit (the whole account) nor an unreachable service (the fallback model is
        behind the same endpoint); anything that is not upstream's doing never gets here.
        """
        try:
            return self._guarded(call.model, deadline, attempt, attempts, call.max_retry_wait)
        except UpstreamUnavailable as exc:
            fallback = self.settings.model_fallback
            if (
                isinstance(exc, SpendLimitReached | UpstreamUnreachable)
                or not fallback
                or fallback == call.model
                or deadline.remaining() < MIN_ATTEMPT_SECONDS
            ):
                raise
            logger.warning("falling back", extra={"model": call.model, "fallback": fallback, "code": exc.code})
            try:
                return self._guarded(fallback, deadline, attempt, attempts, call.max_retry_wait)
            except UpstreamUnavailable as second:
                # The caller may come back as soon as either model could serve.
                if exc.retry_after is not None and second.retry_after is not None:
                    second.retry_after = min(exc.retry_after, second.retry_after)
                raise

    def _guarded(
        self,
        model: str,
        deadline: Deadline,
        attempt: Callable[[str, float], Any],
        attempts: _Attempts,
        max_wait: float | None = None,
    ) -> Any:
        """The retry loop for one model. Every attempt first passes the model's shared cooldown and
        circuit breaker, so the breaker counts attempts (not loops) and an open circuit stops a loop
        between two attempts. Only health failures (BREAKER_FAILURES) count toward it."""
        s = self.settings
        name = f"claude:{model}"

        def call(timeout: float) -> Any:
            paused = self._cooldowns.remaining(model)
            if paused > 0:
                raise UpstreamRateLimited("the model service asked us to slow down; retry later", retry_after=paused)
            attempts.count += 1
            try:
                result = attempt(model, timeout)
            except Exception as exc:
                try:
                    error = classify(exc)
                except Exception:
                    # Neither upstream's doing nor the caller's: a bug. Never retried nor counted.
                    logger.exception("unexpected error around an upstream call", extra={"model": model})
                    raise InternalError() from exc
                if isinstance(error, UpstreamRateLimited) and error.retry_after:
                    self._cooldowns.pause(model, error.retry_after)
                if isinstance(error, BREAKER_FAILURES):
                    self._count_failure(name)
                raise error from exc
            with self._lock:
                self._failures.pop(name, None)
            self._fleet.succeeded(name)
            return result

        breaker = circuit_breaker(
            name=name, persistence_store=self._breaker_store, config=self._breaker_config, on_transition=self._seen
        )(call)

        def once(timeout: float) -> Any:
            # A trip seen by this instance stops its other loops at once, whatever a concurrent
            # read of the (eventually consistent) store left in Powertools' cache.
            with self._lock:
                opened_at = self._opened.get(name)
            if opened_at is not None and time.time() < opened_at + s.breaker_recovery_seconds:
                raise CircuitOpen(retry_after=self._half_open_in(opened_at))
            try:
                return breaker(timeout)
            except CircuitBreakerOpenError as exc:
                opened_at = exc.circuit.opened_at if exc.circuit else None
                raise CircuitOpen(retry_after=self._half_open_in(opened_at)) from None

        def run() -> Any:
            return call_with_retry(
                once,
                deadline=deadline,
                max_attempts=s.retry_max_attempts,
                base_delay=s.retry_base_delay_seconds,
                max_delay=s.retry_max_delay_seconds,
                max_attempt_seconds=s.request_timeout_seconds,
                max_wait=max_wait,
                hint=lambda: self._circuit_hint(name),
                on_retry=lambda exc, wait: logger.info(
                    "retrying", extra={"model": model, "code": exc.code, "wait_seconds": round(wait, 3)}
                ),
            )

        return self._refreshing_key(run)

    def _count_failure(self, name: str) -> None:
        """Count a health failure here and across the fleet.

        Here, as Powertools does, but tripping this instance at once: Powertools marks the circuit
        open only after its DynamoDB write, and loops racing that write would each make another
        attempt. Across the fleet, so that failures spread over many instances open the circuit
        after a few attempts in total: the attempt that completes the fleet's count opens it
        through the Powertools store, for every instance.
        """
        threshold = self.settings.breaker_failure_threshold
        with self._lock:
            failures = self._failures.get(name, 0) + 1
            self._failures[name] = 0 if failures >= threshold else failures
            if failures >= threshold:
                self._opened[name] = int(time.time())
        if self._fleet.failed(name) != threshold or failures >= threshold:
            return
        opened_at = int(time.time())
        with self._lock:
            self._opened[name] = opened_at
        try:
            self._breaker_store.save_open(name, failure_count=threshold, opened_at=opened_at)
        except Exception as exc:  # the store fails open, as Powertools' own writes do
            logger.warning("could not open the circuit for the fleet", extra={"error_type": type(exc).__name__})
        self._fleet.reset(name)
        logger.warning("circuit opened by the fleet's failures", extra={"circuit": name})

    def _seen(self, transition: CircuitTransition) -> None:
        """Remember (or forget) a circuit this instance saw open; log every transition."""
        logger.warning(
            "circuit transition",
            extra={
                "circuit": transition.circuit_name,
                "from": str(transition.from_state),
                "to": str(transition.to_state),
            },
        )
        with self._lock:
            if transition.to_state == CircuitState.OPEN and transition.opened_at is not None:
                self._opened[transition.circuit_name] = transition.opened_at
            elif transition.to_state == CircuitState.CLOSED:
                self._opened.pop(transition.circuit_name, None)

    def _half_open_in(self, opened_at: int | None) -> float:
        """Seconds until an open circuit lets a trial call through (at least 1: a probe may be running)."""
        if opened_at is None:
            return float(self.settings.breaker_recovery_seconds)
        return max(1.0, opened_at + self.settings.breaker_recovery_seconds - time.time())

    def _circuit_hint(self, name: str) -> float | None:
        """The circuit's time to half-open, if a failed loop left it open; else None."""
        try:
            record = self._breaker_store.get_state(name)
        except Exception:  # the store fails open; so does the hint
            return None
        if record.state == CircuitState.CLOSED:
            return None
        return self._half_open_in(record.opened_at)

    # ---- accounting ---------------------------------------------------------------------

    def _costs(self, result: ClaudeResult, day: date, *, batch: bool = False) -> Costs:
        """The call's cost at the prices in force on `day`, and what it would have cost without
        prompt caching and without routing (the same usage on the balanced model)."""
        ttl = self.settings.cache_ttl
        return Costs(
            actual=cost_usd(result.usage, self._price(result.model), on=day, cache_ttl=ttl, batch=batch),
            without_caching=cost_without_caching(result.usage, self._price(result.model), on=day, batch=batch),
            without_routing=cost_usd(
                result.usage, self._price(self.settings.model_balanced), on=day, cache_ttl=ttl, batch=batch
            ),
        )

    def _settle(
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

        Never raises: the answer is paid for, so the caller gets it even if the ledger cannot be
        written (retried first). Then the usage is logged for reconciliation with a
        `UsageNotRecorded` metric (alarmed), and the reservation stays held against the budget.
        """
        costs = self._costs(result, day or utc_date(), batch=batch)
        result.cost_usd = costs.actual
        u = result.usage
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(SETTLE_ATTEMPTS), wait=wait_exponential(multiplier=0.05, max=0.5), reraise=True
            ):
                with attempt:
                    self.ledger.settle(reservation, u, costs, feature=request.feature, model=result.model)
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

    def _record_failure(self, request: ClaudeRequest, model: str, exc: ClaudeError, attempts: int) -> None:
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


class _OpenStream:
    """One upstream SSE stream: tracks text and cumulative usage so a cut stream is still billed.

    Billing rule (docs/streaming.md): a finished stream is billed exactly as its final usage says.
    A stream cut short (caller gone, upstream error, deadline) is billed the output tokens upstream
    last reported (message_start, or a message_delta's cumulative count) plus one token per UTF-8
    byte of every delta received since, at most max_tokens (the model cannot produce more): an
    upper bound on what was generated, whether or not it reached the caller, and never fewer
    tokens than the delivered text could hold.
    """

    def __init__(self, events: Any, *, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._events = events
        self._iter = iter(events)
        self._buffer: list[str] = []
        self.model: str | None = None
        self.request_id: str | None = getattr(events, "_request_id", None) or getattr(
            getattr(events, "response", None), "headers", {}
        ).get("request-id")
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.text_parts: list[str] = []
        self.finished = False
        self.bytes_since_usage = 0  # UTF-8 bytes of deltas received after upstream last reported usage

    def _next_text(self) -> str | None:
        """Advance to the next text piece; None at the end of the stream."""
        with _malformed_is_upstream_error():
            return self._advance()

    def _advance(self) -> str | None:
        for event in self._iter:
            kind = event.type
            if kind == "message_start":
                self.model = event.message.model
                self.usage = Usage.from_api(event.message.usage)
                self.bytes_since_usage = 0
            elif kind == "content_block_delta":
                self.bytes_since_usage += _delta_bytes(event.delta)
                if getattr(event.delta, "type", "") == "text_delta":
                    if not isinstance(event.delta.text, str):
                        raise TypeError("text delta without text")
                    self.text_parts.append(event.delta.text)
                    return event.delta.text
            elif kind == "message_delta":
                self.stop_reason = event.delta.stop_reason
                delta_usage = Usage.from_api(event.usage)
                # message_delta usage is cumulative; keep input-side numbers from message_start if absent.
                self.usage.output_tokens = delta_usage.output_tokens
                self.bytes_since_usage = 0
                for name in (
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                    "cache_write_5m_tokens",
                    "cache_write_1h_tokens",
                ):
                    if getattr(delta_usage, name):
                        setattr(self.usage, name, getattr(delta_usage, name))
            elif kind == "message_stop":
                self.finished = True
        if not self.finished:
            raise UpstreamServerError("the model stream ended before it was complete")
        return None

    def read_until_text(self) -> None:
        """Pull events until the first text arrives, so failures before it can still be retried."""
        piece = self._next_text()
        if piece is not None:
            self._buffer.append(piece)

    def pieces(self, deadline: Deadline) -> Iterator[str]:
        yield from self._buffer
        self._buffer.clear()
        while not self.finished:
            if deadline.expired():
                raise UpstreamTimeout("the stream ran out of time")
            piece = self._next_text()
            if piece is None:
                return
            yield piece

    def close(self) -> None:
        # Closing a broken connection may fail; there is nothing more to do then.
        with contextlib.suppress(Exception):
            self._events.close()

    def result(self, model: str, *, attempts: int) -> ClaudeResult:
        text = "".join(self.text_parts)
        if not self.finished:
            # Cut short: what upstream last reported plus an upper bound on what came after it.
            estimate = min(self.usage.output_tokens + self.bytes_since_usage, self.max_tokens)
            self.usage.output_tokens = max(self.usage.output_tokens, estimate)
            self.bytes_since_usage = 0
        return ClaudeResult(
            text=text,
            model=self.model or model,
            stop_reason=self.stop_reason,
            usage=self.usage,
            cost_usd=Decimal(0),
            request_id=self.request_id,
            attempts=attempts,
        )


@contextlib.contextmanager
def _malformed_is_upstream_error() -> Iterator[None]:
    """A 200 whose body is JSON of the wrong shape ({} or [] or a block without text) makes the SDK
    or our reading of it fail with a TypeError or AttributeError: that is upstream's fault, not a bug
    of ours, so it becomes a retryable UPSTREAM_ERROR rather than a 500."""
    try:
        yield
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise UpstreamMalformed() from exc


def _result_of(message: Any, model: str) -> ClaudeResult:
    """A ClaudeResult from the SDK's Message (cost still to be computed)."""
    if not isinstance(message.content, list) or message.usage is None:
        raise TypeError("message without content or usage")
    text = "".join(_text_of(block) for block in message.content if block.type == "text")
    return ClaudeResult(
        text=text,
        model=message.model or model,
        stop_reason=message.stop_reason,
        usage=Usage.from_api(message.usage),
        cost_usd=Decimal(0),
        request_id=getattr(message, "_request_id", None),
        attempts=1,
    )


def _text_of(block: Any) -> str:
    if not isinstance(block.text, str):
        raise TypeError("text block without text")
    return block.text


def _delta_bytes(delta: Any) -> int:
    """UTF-8 bytes a content delta carries (text, tool-input JSON or thinking)."""
    for name in ("text", "partial_json", "thinking"):
        value = getattr(delta, name, None)
        if isinstance(value, str):
            return len(value.encode("utf-8", "surrogatepass"))
    return 0


def _cache_turns(messages: list[dict[str, Any]], ttl: str) -> list[dict[str, Any]]:
    """Breakpoints on the last two user turns (Anthropic's multi-turn pattern): the earlier one is
    where the previous call wrote its prefix, so this call reads it; the last one writes the prefix
    the next call will read. Below the model's minimum cacheable length they silently do nothing."""
    marked = list(messages)
    users = [i for i, m in enumerate(marked) if m.get("role") == "user" and isinstance(m.get("content"), str)]
    for i in users[-2:]:
        block = {"type": "text", "text": marked[i]["content"], "cache_control": {"type": "ephemeral", "ttl": ttl}}
        marked[i] = {**marked[i], "content": [block]}
    return marked


def _utf8_bytes(content: Any) -> int:
    """UTF-8 bytes of text (or of the JSON of blocks or a schema): an upper bound on its tokens.
    A lone surrogate counts as its 3 bytes rather than failing here (validation refuses it)."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def _day(iso: str | None) -> date:
    """An ISO date (a reservation's day), or today if it is missing or unreadable."""
    try:
        return date.fromisoformat(iso) if iso else utc_date()
    except ValueError:
        return utc_date()


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'root'}: {e['msg']}" for e in exc.errors()[:5])


_default: ClaudeClient | None = None
_default_lock = threading.Lock()


def output_schema(output: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema structured output sends for `output` (realtime and batch requests alike)."""
    return dict(anthropic.transform_schema(output.model_json_schema()))


def get_client() -> ClaudeClient:
    """The container's client, built on first use from the environment's settings."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ClaudeClient(get_settings())
        return _default


def reset_client() -> None:
    """Forget the container's client (tests and the local stack change settings)."""
    global _default
    with _default_lock:
        _default = None
    get_settings.cache_clear()
