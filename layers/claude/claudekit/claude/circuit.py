"""The gate every upstream attempt passes: the model's shared cooldown (after a 429) and its circuit
breaker (after health failures), with failures counted here and across the fleet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.circuit_breaker import (
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
    CircuitTransition,
    circuit_breaker,
)

from claudekit.claude.retry import to_claude_error
from claudekit.errors import BREAKER_FAILURES, CircuitOpen, InternalError, UpstreamRateLimited
from claudekit.settings import Settings
from claudekit.store.breaker import CircuitStore, FleetFailures
from claudekit.store.cooldown import REFRESH_SECONDS, Cooldowns
from claudekit.telemetry import logger

Attempt = Callable[[str, float], Any]  # (model, timeout) -> one upstream call's result


@dataclass
class AttemptCount:
    """Upstream attempts of one logical call, across retries and the fallback model."""

    count: int = 0


class Circuits:
    """One circuit per model (`claude:<model>`), state in DynamoDB through Powertools."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cooldowns = Cooldowns(settings.table_name, max_seconds=settings.cooldown_max_seconds)
        self._built: CircuitStore | None = None
        self._build_lock = threading.Lock()
        self._config = CircuitBreakerConfig(
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
        self._lock = threading.Lock()

    @property
    def _store(self) -> CircuitStore:
        """Built on the first attempt, on the stores' DynamoDB client, which the admission before
        it has already built: nothing of it costs the init, and no second client is made."""
        if self._built is None:
            with self._build_lock:
                if self._built is None:
                    self._built = CircuitStore(self.settings.table_name, cooldowns=self._cooldowns)
        return self._built

    def guard(self, model: str, attempt: Attempt, attempts: AttemptCount) -> Callable[[float], Any]:
        """`attempt` for `model` behind its cooldown and circuit: what the retry loop calls once per
        attempt, so the breaker counts attempts (not loops) and an open circuit stops a loop between
        two attempts. Only health failures (BREAKER_FAILURES) count toward it; what raises is a
        ClaudeError (a bug around the call becomes InternalError, never retried nor counted)."""
        name = _circuit(model)

        def call(timeout: float) -> Any:
            paused = self._cooldowns.remaining(model)
            if paused > 0:
                raise UpstreamRateLimited("the model service asked us to slow down; retry later", retry_after=paused)
            attempts.count += 1
            try:
                result = attempt(model, timeout)
            except Exception as exc:
                try:
                    error = to_claude_error(exc)
                except Exception:
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
            name=name, persistence_store=self._store, config=self._config, on_transition=self._seen
        )(call)

        def once(timeout: float) -> Any:
            # A trip seen by this instance stops its other loops at once, whatever a concurrent
            # read of the (eventually consistent) store left in Powertools' cache.
            with self._lock:
                opened_at = self._opened.get(name)
            if opened_at is not None and time.time() < opened_at + self.settings.breaker_recovery_seconds:
                raise CircuitOpen(retry_after=self._half_open_in(opened_at))
            try:
                return breaker(timeout)
            except CircuitBreakerOpenError as exc:
                opened_at = exc.circuit.opened_at if exc.circuit else None
                raise CircuitOpen(retry_after=self._half_open_in(opened_at)) from None

        return once

    def half_open_hint(self, model: str) -> float | None:
        """The circuit's time to half-open, if a failed loop left it open; else None."""
        try:
            record = self._store.get_state(_circuit(model))
        except Exception:  # the store fails open; so does the hint
            return None
        if record.state == CircuitState.CLOSED:
            return None
        return self._half_open_in(record.opened_at)

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
            self._store.save_open(name, failure_count=threshold, opened_at=opened_at)
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


def _circuit(model: str) -> str:
    return f"claude:{model}"
