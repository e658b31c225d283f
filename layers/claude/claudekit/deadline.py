"""How much time a call may still spend: the tighter of the Lambda's remaining time and the
caller's own budget counted from when the request reached API Gateway."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class LambdaContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(frozen=True)
class Deadline:
    """An absolute monotonic deadline, already reduced by a safety margin."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_context(cls, context: LambdaContextLike | None, margin: float, default: float = 30.0) -> Deadline:
        """Leave `margin` seconds to answer the caller before Lambda kills the invocation."""
        remaining = default
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            remaining = context.get_remaining_time_in_millis() / 1000
        return cls.after(remaining - margin)

    @classmethod
    def for_request(
        cls,
        context: LambdaContextLike | None,
        *,
        request_time_ms: float | None,
        budget: float,
        margin: float,
    ) -> Deadline:
        """The deadline of an API Gateway request: `budget` seconds (the integration timeout, 29 s
        for buffered REST routes) counted from `requestTimeEpoch`, so time API Gateway and a cold
        start already spent is not spent twice, and never past the Lambda's own remaining time.
        `margin` is left to write the answer (a JSON error included) before the caller is cut."""
        remaining = budget
        if request_time_ms is not None and request_time_ms > 0:
            elapsed = time.time() - request_time_ms / 1000
            # Outside [0, budget] the timestamp cannot be this request's (API Gateway would have cut
            # it already): a canned test event or a skewed clock. Lambda's own time still bounds it.
            if 0 <= elapsed <= budget:
                remaining = budget - elapsed
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            remaining = min(remaining, context.get_remaining_time_in_millis() / 1000)
        return cls.after(remaining - margin)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0
