"""A shared cooldown per model: an upstream 429's retry-after, honoured by every instance.

An upstream 429 `rate_limit_error` is our account's limit for that model, not the service's
health, so it never touches the circuit breaker. Instead the time upstream asked for is written to
the state table (`cooldown#<model>`, like the breaker's state), and every instance checks it before
an attempt: while it lasts no call is made and callers get 503 with the time left as Retry-After.

Like Powertools' breaker, a DynamoDB failure here fails open (the call goes ahead): a degraded
table must not become the outage.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from claudekit.store.dynamo import ThreadTable
from claudekit.telemetry import logger

# How long an instance trusts a "no cooldown" read before it reads the table again.
LOCAL_CACHE_SECONDS = 1.0


class Cooldowns:
    def __init__(self, table_name: str, *, max_seconds: float) -> None:
        self._max = max_seconds
        self._tables = ThreadTable(table_name)
        self._lock = threading.Lock()
        # model -> (until, checked_at): what this instance last knew.
        self._known: dict[str, tuple[float, float]] = {}

    @property
    def _table(self) -> Any:
        return self._tables.get()

    def remaining(self, model: str) -> float:
        """Seconds the model is still paused for (0 when it is not)."""
        now = time.time()
        with self._lock:
            until, checked = self._known.get(model, (0.0, 0.0))
        if until <= now and now - checked >= LOCAL_CACHE_SECONDS:
            try:
                item = self._table.get_item(Key={"id": _key(model)}).get("Item") or {}
            except (ClientError, BotoCoreError) as exc:
                logger.warning("cooldown read failed; proceeding", extra={"error_type": type(exc).__name__})
                item = {}
            until = float(item.get("until", 0))
            with self._lock:
                self._known[model] = (until, now)
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
            self._table.update_item(
                Key={"id": _key(model)},
                UpdateExpression="SET #until = :until, expiration = :expiration",
                ConditionExpression="attribute_not_exists(#until) OR #until < :until",
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues={
                    ":until": Decimal(str(round(until, 3))),
                    ":expiration": int(until) + 3600,
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                logger.warning("cooldown write failed", extra={"error_type": type(exc).__name__})
        except BotoCoreError as exc:
            logger.warning("cooldown write failed", extra={"error_type": type(exc).__name__})
        logger.warning("model paused by upstream rate limit", extra={"model": model, "seconds": round(seconds, 3)})


def _key(model: str) -> str:
    return f"cooldown#{model}"
