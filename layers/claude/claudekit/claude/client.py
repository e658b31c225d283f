"""The careful Claude client every function shares, composed of the modules beside it.

One call goes: build the request (request.py) -> reserve its worst case (accounting.py) ->
routed model, then the fallback (fallback.py), each attempt through the model's cooldown and
circuit (circuit.py) and the retry loop (retry.py), one key refresh on 401 (sdk.py) -> usage,
cost, metrics, logs (accounting.py). Streams read through streaming.py; the Message Batches
API has its helpers in batch_api.py. The client never knows which adapter called it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ValidationError

from claudekit.claude.accounting import Accounting
from claudekit.claude.circuit import AttemptCount, Circuits
from claudekit.claude.fallback import Fallback
from claudekit.claude.request import (
    Call,
    ClaudeRequest,
    ClaudeResult,
    Delta,
    build_call,
    malformed_is_upstream_error,
    output_schema,
    result_of,
)
from claudekit.claude.retry import to_claude_error
from claudekit.claude.sdk import Sdk
from claudekit.claude.streaming import OpenStream, open_stream
from claudekit.deadline import Deadline
from claudekit.errors import ClaudeError, StructuredOutputError
from claudekit.settings import Settings, get_settings
from claudekit.store.ledger import Ledger
from claudekit.telemetry import logger

M = TypeVar("M", bound=BaseModel)


class ClaudeClient:
    def __init__(
        self, settings: Settings, ledger: Ledger | None = None, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.settings = settings
        self.accounting = Accounting(settings, ledger)
        self.ledger = self.accounting.ledger
        self.sdk = Sdk(settings)
        self.fallback = Fallback(settings, Circuits(settings), self.sdk, sleep=sleep)

    def prepare(self, request: ClaudeRequest) -> Call:
        """The SDK parameters of `request` (caps, routing, cache marking) and its token bounds."""
        return build_call(request, self.settings, self.accounting.min_cache_tokens)

    def complete(self, request: ClaudeRequest, deadline: Deadline) -> ClaudeResult:
        """One non-streaming call with every safeguard; raises ClaudeError."""
        call = self.prepare(request)
        reservation = self.accounting.admit(request, call)
        started = time.monotonic()
        attempts = AttemptCount()
        try:
            result: ClaudeResult = self.fallback.run(
                call, deadline, lambda model, timeout: self._create(model, timeout, call), attempts
            )
        except ClaudeError as exc:
            self.accounting.release(request, reservation, call.model, exc, attempts.count)
            raise
        result.attempts = attempts.count
        self.accounting.settle(request, reservation, result, latency=time.monotonic() - started, day=call.day)
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
            self.accounting.record_failure(request, second.model, StructuredOutputError(), second.attempts)
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
        call = self.prepare(request)
        reservation = self.accounting.admit(request, call)
        started = time.monotonic()
        attempts = AttemptCount()
        try:
            upstream: OpenStream = self.fallback.run(
                call,
                deadline,
                lambda model, timeout: open_stream(self.sdk.get(), model, timeout, call.params),
                attempts,
            )
        except ClaudeError as exc:
            self.accounting.release(request, reservation, call.model, exc, attempts.count)
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
            failure = to_claude_error(exc)
            raise failure from exc
        finally:
            upstream.close()
            result = upstream.result(call.model, attempts=attempts.count)
            extra = {"TimeToFirstToken": (first_token * 1000, MetricUnit.Milliseconds)}
            extra["StreamDuration"] = ((time.monotonic() - started) * 1000, MetricUnit.Milliseconds)
            self.accounting.settle(
                request, reservation, result, latency=time.monotonic() - started, extra=extra, day=call.day
            )
            if failure is not None:
                self.accounting.record_failure(request, result.model, failure, attempts.count)
        yield result

    def _create(self, model: str, timeout: float, call: Call) -> ClaudeResult:
        # Building and sending the request raise as themselves (an unencodable string is our
        # caller's input, not upstream's); only reading the answer can be upstream's malformed reply.
        raw = self.sdk.get().messages.with_raw_response.create(model=model, timeout=timeout, **call.params)
        with malformed_is_upstream_error():
            return result_of(raw.parse(), model)


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'root'}: {e['msg']}" for e in exc.errors()[:5])


_default: ClaudeClient | None = None
_default_lock = threading.Lock()


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
