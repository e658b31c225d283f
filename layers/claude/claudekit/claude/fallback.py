"""Where a call's attempts are spent: the routed model through the retry loop, then (if it stays
unavailable) the fallback model once. Each attempt passes the model's cooldown and circuit
(claude/circuit.py); each loop gets one key refresh on a 401 (claude/sdk.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from claudekit.claude.circuit import Attempt, AttemptCount, Circuits
from claudekit.claude.request import Call
from claudekit.claude.retry import MIN_ATTEMPT_SECONDS, call_with_retry
from claudekit.claude.sdk import Sdk
from claudekit.deadline import Deadline
from claudekit.errors import SpendLimitReached, UpstreamUnavailable, UpstreamUnreachable
from claudekit.settings import Settings
from claudekit.telemetry import logger


class Fallback:
    def __init__(
        self, settings: Settings, circuits: Circuits, sdk: Sdk, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.settings = settings
        self.circuits = circuits
        self.sdk = sdk
        self.sleep = sleep  # the retry loop's waits (tests record them)

    def run(self, call: Call, deadline: Deadline, attempt: Attempt, attempts: AttemptCount) -> Any:
        """Try the routed model; if it stays unavailable, try the fallback model once.

        Not for a spend limit (the whole account) nor an unreachable service (the fallback model is
        behind the same endpoint); anything that is not upstream's doing never gets here.
        """
        try:
            return self._one_model(call.model, deadline, attempt, attempts, call.max_retry_wait)
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
                return self._one_model(fallback, deadline, attempt, attempts, call.max_retry_wait)
            except UpstreamUnavailable as second:
                # The caller may come back as soon as either model could serve.
                if exc.retry_after is not None and second.retry_after is not None:
                    second.retry_after = min(exc.retry_after, second.retry_after)
                raise

    def _one_model(
        self, model: str, deadline: Deadline, attempt: Attempt, attempts: AttemptCount, max_wait: float | None
    ) -> Any:
        """The retry loop for one model, each attempt through its circuit."""
        s = self.settings
        once = self.circuits.guard(model, attempt, attempts)

        def run() -> Any:
            return call_with_retry(
                once,
                deadline=deadline,
                max_attempts=s.retry_max_attempts,
                base_delay=s.retry_base_delay_seconds,
                max_delay=s.retry_max_delay_seconds,
                max_attempt_seconds=s.request_timeout_seconds,
                max_wait=max_wait,
                hint=lambda: self.circuits.half_open_hint(model),
                on_retry=lambda exc, wait: logger.info(
                    "retrying", extra={"model": model, "code": exc.code, "wait_seconds": round(wait, 3)}
                ),
                sleep=self.sleep,
            )

        return self.sdk.refreshing_key(run)
