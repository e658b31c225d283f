"""How much time a call may still spend, derived from the Lambda's remaining time."""

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

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0
