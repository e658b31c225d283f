"""Idempotency-Key on every POST: a retried request gets the first response, not a second call.

Powertools idempotency on the state table does the bookkeeping. The key is scoped to the caller
and the route (`<hashed user> <METHOD> <path> <key>`), so two users (or two routes) never share
one, and the payload is the raw body: the same key with another body is 422. A retry while the
first request is running is 409 CONFLICT with Retry-After. Keys expire after 24 hours.

Only final outcomes are kept: a 2xx or 4xx response, except 409 and 429 (and every 5xx), which
say "try again"; for those the record is deleted so a retry runs afresh. An outcome too large for
one DynamoDB item (400 KB) is not kept either, and a failure to keep one never costs the caller
the answer: the key is freed, and a retry runs again. A replay carries
`Idempotent-Replayed: true` and the first response's status and body.

Streams (the stream function) store their outcome when the stream ends: the events it sent, which
a replay sends again at once as one buffered `text/event-stream` (see docs/idempotency.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from claudekit.errors import Conflict, InvalidRequest
from claudekit.telemetry import hash_user, logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

# Powertools' idempotency (a dozen modules, jmespath included) is imported only when a request
# carries an Idempotency-Key (by `Idempotency`), never at import: most requests and every cold start
# go without it.

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
EXPIRES_AFTER_SECONDS = 24 * 3600
# A retry that finds the first request still running is told to come back after this long.
IN_PROGRESS_RETRY_SECONDS = 2
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# Powertools stores an outcome as JSON text (ASCII-escaped) in one item, whose limit is 400 KB.
MAX_KEPT_BYTES = 300_000


class RemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def key_of(headers: Mapping[str, Any] | None) -> str | None:
    """The request's Idempotency-Key (any case), None without one; 422 for an unusable one."""
    for name, value in (headers or {}).items():
        if name.lower() == HEADER.lower():
            text = str(value[0] if isinstance(value, list) and value else value)
            if not _KEY.fullmatch(text):
                raise InvalidRequest(f"{HEADER} must be 1 to 255 visible ASCII characters")
            return text
    return None


def final(status: int) -> bool:
    """Whether a response is the request's outcome (kept and replayed) or a 'try again'."""
    return status < 500 and status not in (409, 429)


def keepable(outcome: dict[str, Any]) -> bool:
    """Small enough to keep in one item, as Powertools serialises it."""
    return len(json.dumps(outcome)) <= MAX_KEPT_BYTES


def in_progress() -> Conflict:
    return Conflict("a request with this Idempotency-Key is still running", retry_after=IN_PROGRESS_RETRY_SECONDS)


def mismatch() -> InvalidRequest:
    return InvalidRequest(f"this {HEADER} was used with a different request body")


def request_data(user_id: str, method: str, path: str, key: str, body: str | bytes | None) -> dict[str, str]:
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else (body or b"")
    return {"key": f"{hash_user(user_id)} {method} {path} {key}", "body": hashlib.sha256(raw).hexdigest()}


class _NotFinal(Exception):
    """Carries a 'try again' response out of the idempotent call, so its record is deleted."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response


def _replayed(response: Any, idempotent_data: DataRecord) -> Any:
    if isinstance(response, dict):
        response["replayed"] = True
    return response


class Idempotency:
    """The store of first responses, on the state table (one per container)."""

    def __init__(self, table_name: str) -> None:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        self.persistence = DynamoDBPersistenceLayer(table_name=table_name)

    def config(self, remaining: RemainingTime | None) -> IdempotencyConfig:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

        config = IdempotencyConfig(
            event_key_jmespath="key",
            payload_validation_jmespath="body",
            expires_after_seconds=EXPIRES_AFTER_SECONDS,
            raise_on_no_idempotency_key=True,
            response_hook=_replayed,
        )
        if remaining is not None:
            # A request that dies with its Lambda frees the key when its time is up.
            config.register_lambda_context(remaining)  # type: ignore[arg-type]
        return config

    def run(
        self, data: dict[str, str], produce: Callable[[], dict[str, Any]], remaining: RemainingTime | None
    ) -> tuple[dict[str, Any], bool]:
        """(response, replayed): `produce`'s response the first time, the stored one after.

        `produce` returns an API Gateway proxy response; raises Conflict (in progress) or
        InvalidRequest (another body)."""
        from aws_lambda_powertools.utilities.idempotency import idempotent_function
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        produced: list[dict[str, Any]] = []

        def once(request: dict[str, str]) -> dict[str, Any]:
            response = produce()
            produced.append(response)
            if not final(int(response["statusCode"])) or not keepable(response):
                raise _NotFinal(response)
            return response

        run_once = idempotent_function(
            once,
            data_keyword_argument="request",
            persistence_store=self.persistence,
            config=self.config(remaining),
            key_prefix="idem#http",
        )
        try:
            response = run_once(request=data)
        except _NotFinal as exc:
            return exc.response, False
        except IdempotencyAlreadyInProgressError:
            raise in_progress() from None
        except IdempotencyValidationError:
            raise mismatch() from None
        except IdempotencyPersistenceLayerError:
            if not produced:
                raise
            # The answer exists but could not be kept: deliver it, and free the key for a retry.
            logger.warning("could not keep a response for its Idempotency-Key")
            with contextlib.suppress(Exception):
                self.persistence.delete_record(data=data, exception=RuntimeError("not kept"))
            return produced[0], False
        replayed = bool(response.pop("replayed", False))
        return response, replayed

    # ---- streams: the outcome is known only when the stream ends -------------------------------

    def claim(self, data: dict[str, str], remaining: RemainingTime | None) -> dict[str, Any] | None:
        """Start a stream under `data`'s key: None if it is ours to run, else the stored outcome
        to replay. Raises Conflict (in progress) or InvalidRequest (another body)."""
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyItemAlreadyExistsError,
            IdempotencyValidationError,
        )

        store = self.persistence
        store.configure(self.config(remaining), key_prefix="idem#stream")
        millis = remaining.get_remaining_time_in_millis() if remaining is not None else None
        try:
            store.save_inprogress(data=data, remaining_time_in_millis=millis)
            return None
        except IdempotencyItemAlreadyExistsError as exc:
            try:  # the conditional write returns the record it found; older stores need a read
                record = exc.old_data_record or store.get_record(data=data)
            except IdempotencyValidationError:
                raise mismatch() from None
        except IdempotencyValidationError:
            raise mismatch() from None
        if record is None or record.status != "COMPLETED":
            raise in_progress()
        return record.response_json_as_dict()

    def finish(self, data: dict[str, str], outcome: dict[str, Any] | None) -> None:
        """Keep a final outcome for replay, or (None, or too large) free the key so a retry runs afresh."""
        if outcome is None or not keepable(outcome):
            self.persistence.delete_record(data=data, exception=RuntimeError("not final"))
        else:
            self.persistence.save_success(data=data, result=outcome)
