"""A shared cooldown per model: an upstream 429's retry-after, honoured by every instance.

An upstream 429 `rate_limit_error` is our account's limit for that model, not the service's
health, so it never touches the circuit breaker. Instead the time upstream asked for is written to
the state table (`cooldown#<model>`, beside the breaker's state), and every instance honours it
before an attempt: while it lasts no call is made and callers get 503 with the time left as
Retry-After.

Reading it costs no round trip of its own on the hot path: the circuit store reads it in the same
batch as the breaker's state (`breaker.CircuitStore`), at most every `REFRESH_SECONDS` per
instance, so every instance honours a new cooldown within that. Only when that batch could not
say does this read the item itself.

Like Powertools' breaker, a DynamoDB failure here fails open (the call goes ahead): a degraded
table must not become the outage.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from claudekit.store.dynamo import Table, error_code
from claudekit.telemetry import logger

# How long an instance trusts what it last read of the fleet's health (breaker state and
# cooldowns) before it reads the table again: the lag before every instance honours a change.
REFRESH_SECONDS = 2


def cooldown_id(model: str) -> str:
    return f"cooldown#{model}"


class Cooldowns:
    def __init__(self, table_name: str, *, max_seconds: float) -> None:
        self._max = max_seconds
        self._table = Table(table_name)
        self._lock = threading.Lock()
        # model -> (until, checked_at): what this instance last knew.
        self._known: dict[str, tuple[float, float]] = {}

    def learn(self, model: str, item: dict[str, Any] | None, at: float) -> None:
        """What a read of `cooldown#<model>` found at `at` (None: no cooldown item). A pause is
        never shortened, so a read that raced this instance's own pause keeps the later end."""
        until = float((item or {}).get("until", 0))
        with self._lock:
            self._known[model] = (max(until, self._known.get(model, (0.0, 0.0))[0]), at)

    def remaining(self, model: str) -> float:
        """Seconds the model is still paused for (0 when it is not)."""
        now = time.time()
        with self._lock:
            until, checked = self._known.get(model, (0.0, 0.0))
        if until <= now and now - checked >= REFRESH_SECONDS:
            try:
                item = self._table.get(cooldown_id(model))
            except (ClientError, BotoCoreError) as exc:
                logger.warning("cooldown read failed; proceeding", extra={"error_type": type(exc).__name__})
                item = None
            self.learn(model, item, now)
            with self._lock:
                until = self._known[model][0]
        return max(0.0, until - now)

    def pause(self, model: str, seconds: float) -> None:
        """Pause `model` for `seconds` (capped), never shortening a longer pause already set."""
        seconds = min(self._max, max(0.0, seconds))
        if seconds <= 0:
            return
        until = time.time() + seconds
        with self._lock:
            self._known[model] = (max(until, self._known.get(model, (0.0, 0.0))[0]), time.time())
        try:
            self._table.update(
                cooldown_id(model),
                "SET #until = :until, expiration = :expiration",
                condition="attribute_not_exists(#until) OR #until < :until",
                names={"#until": "until"},
                values={":until": Decimal(str(round(until, 3))), ":expiration": int(until) + 3600},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                logger.warning("cooldown write failed", extra={"error_type": type(exc).__name__})
        except BotoCoreError as exc:
            logger.warning("cooldown write failed", extra={"error_type": type(exc).__name__})
        logger.warning("model paused by upstream rate limit", extra={"model": model, "seconds": round(seconds, 3)})
