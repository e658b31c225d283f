"""Scripted faults: what the next matching request suffers instead of a normal answer.

A fault spec as JSON (``POST /_sim/faults`` takes a list of these; ``Fault.to_dict`` produces one)::

    {"kind": "status", "status": 429, "error_type": "rate_limit_error", "message": "...",
     "retry_after": 1, "retry_after_ms": 200, "headers": {"x-should-retry": "false"}, "match": "job-17"}
    {"kind": "status", "status": 429, "error_code": "enforced_spend_limit_reached"}
    {"kind": "hang", "seconds": 5}
    {"kind": "reset"}
    {"kind": "malformed"}
    {"kind": "truncate", "after_deltas": 2}
    {"kind": "stream_error", "after_deltas": 2, "error_type": "overloaded_error", "message": "Overloaded"}

Only ``kind`` is required; ``match`` makes the fault apply only to a request whose text contains it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from local.simulator.errors import error_type_for_status, status_for_error_type

FaultKind = Literal["status", "hang", "reset", "malformed", "truncate", "stream_error"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


@dataclass(frozen=True)
class Fault:
    """One failure to inflict. Build with the class methods (``Fault.status(429, retry_after=1)``)."""

    kind: FaultKind
    status_code: int | None = None
    error_type: str | None = None
    # `error.details.error_code` of the error body (the API's stable cause, e.g. a spend limit).
    error_code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float | None = None
    after_deltas: int | None = None
    match: str | None = None

    @classmethod
    def status(
        cls,
        status: int,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        headers: Mapping[str, str] | None = None,
        match: str | None = None,
    ) -> Fault:
        """An error response: ``status`` with the error type that belongs to it (or ``error_type``).

        ``retry_after`` / ``retry_after_ms`` set the ``retry-after`` / ``retry-after-ms`` headers;
        ``headers`` adds any other (e.g. ``{"x-should-retry": "false"}``).
        """
        return cls(
            kind="status",
            status_code=status,
            error_type=error_type or error_type_for_status(status),
            error_code=error_code,
            message=message,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            headers=dict(headers or {}),
            match=match,
        )

    @classmethod
    def hang(cls, seconds: float, *, match: str | None = None) -> Fault:
        """Read the request, answer nothing for ``seconds``, then close the connection."""
        return cls(kind="hang", seconds=seconds, match=match)

    @classmethod
    def reset(cls, *, match: str | None = None) -> Fault:
        """Read the request, then reset the connection (RST) without a response."""
        return cls(kind="reset", match=match)

    @classmethod
    def malformed(cls, *, match: str | None = None) -> Fault:
        """Answer 200 ``application/json`` with a body that is not valid JSON.

        Matched to one request of a message batch: that request "succeeds" with impossible usage
        (negative ``output_tokens``), the batch's own form of a malformed reply.
        """
        return cls(kind="malformed", match=match)

    @classmethod
    def truncate(cls, after_deltas: int = 2, *, match: str | None = None) -> Fault:
        """Stream ``after_deltas`` content deltas, then close without ``message_stop``.

        On a non-streaming request: send part of the body, then close.
        """
        return cls(kind="truncate", after_deltas=after_deltas, match=match)

    @classmethod
    def stream_error(
        cls,
        after_deltas: int = 2,
        error_type: str = "overloaded_error",
        *,
        message: str | None = None,
        error_code: str | None = None,
        match: str | None = None,
    ) -> Fault:
        """Stream ``after_deltas`` content deltas, then an ``event: error``, then end the response.

        On a non-streaming request it is a plain status error of that type.
        """
        return cls(
            kind="stream_error",
            after_deltas=after_deltas,
            error_type=error_type,
            status_code=status_for_error_type(error_type),
            error_code=error_code,
            message=message,
            match=match,
        )

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Fault:
        """Build from a JSON fault spec (see the module docstring). Raises ``ValueError`` if invalid."""
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        unknown = set(spec) - {*_FIELDS, "status"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        match = _opt_str(spec, "match")
        if kind == "status":
            status = spec.get("status", spec.get("status_code"))
            if not isinstance(status, int):
                raise ValueError("a status fault needs an integer 'status'")
            return cls.status(
                status,
                error_type=_opt_str(spec, "error_type"),
                error_code=_opt_str(spec, "error_code"),
                message=_opt_str(spec, "message"),
                retry_after=_opt_float(spec, "retry_after"),
                retry_after_ms=_opt_int(spec, "retry_after_ms"),
                headers=_headers(spec.get("headers")),
                match=match,
            )
        if kind == "hang":
            return cls.hang(_opt_float(spec, "seconds") or 30.0, match=match)
        if kind == "reset":
            return cls.reset(match=match)
        if kind == "malformed":
            return cls.malformed(match=match)
        after = _opt_int(spec, "after_deltas")
        if kind == "truncate":
            return cls.truncate(2 if after is None else after, match=match)
        return cls.stream_error(
            2 if after is None else after,
            _opt_str(spec, "error_type") or "overloaded_error",
            message=_opt_str(spec, "message"),
            error_code=_opt_str(spec, "error_code"),
            match=match,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in _FIELDS:
            value = getattr(self, name)
            if name != "kind" and value not in (None, {}):
                out["status" if name == "status_code" else name] = dict(value) if isinstance(value, Mapping) else value
        return out

    def applies_to(self, text: str) -> bool:
        return self.match is None or self.match in text


_FIELDS: tuple[str, ...] = tuple(Fault.__dataclass_fields__)


def _opt_str(spec: Mapping[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"fault field {key!r} must be a string")


def _opt_float(spec: Mapping[str, Any], key: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"fault field {key!r} must be a number")


def _opt_int(spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"fault field {key!r} must be an integer")


def _headers(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(cast(Mapping[str, str], value))
    raise ValueError("fault field 'headers' must map strings to strings")


class FaultQueue:
    """FIFO of scripted faults plus an optional seeded random failure rate. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self._rng = random.Random(0)
        self._fail_rate = 0.0
        self._fail_status = 529

    def extend(self, faults: Iterable[Fault]) -> None:
        with self._lock:
            self._queue.extend(faults)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._queue)

    def set_random(self, fail_rate: float, fail_status: int, seed: int | None) -> None:
        with self._lock:
            self._fail_rate = fail_rate
            self._fail_status = fail_status
            if seed is not None:
                self._rng = random.Random(seed)

    def take(self, text: str, *, matched_only: bool = False, unmatched_only: bool = False) -> Fault | None:
        """Remove and return the first queued fault that applies to a request with ``text``.

        With no scripted fault for it, a random status fault at ``fail_rate`` (never with
        ``matched_only``, which batch requests use to look for their own faults).
        """
        with self._lock:
            for index, fault in enumerate(self._queue):
                if matched_only and fault.match is None:
                    continue
                if unmatched_only and fault.match is not None:
                    continue
                if fault.applies_to(text):
                    return self._queue.pop(index)
            if not matched_only and self._fail_rate > 0 and self._rng.random() < self._fail_rate:
                return Fault.status(self._fail_status)
            return None
