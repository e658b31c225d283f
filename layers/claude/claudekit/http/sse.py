"""Streaming routes: a stream task's events as server-sent events, through the Lambda Web Adapter.

The order of one request (`respond`), and why:

1. Identity from `x-amzn-request-context` only (lwa.py). No identity -> 401 UNAUTHORIZED.
2. The body is validated like the buffered routes' (the same parser, the same error map).
3. The task runs on a thread of its own (`Pump`). We wait for its first event *before* starting
   the response, so every failure before the first byte (limits, caps, retries exhausted,
   circuit open, an unknown conversation) is an ordinary JSON error with its status and headers.
4. Then `text/event-stream`: each delta is handed to the event loop the moment the upstream
   yields it and written to the socket at once (no buffering in between), then `done`, or
   `error` if the upstream fails mid-stream, and the response ends.
5. If the caller goes away, the pump closes the task's generator (on its own thread, so the
   generator is never touched from two threads) and the client's `finally` still records
   usage, cost and metrics. The response waits, bounded, for that bookkeeping so Lambda does
   not freeze the environment before it is done.

With an Idempotency-Key, a request seen before is answered from its kept outcome instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError

from claudekit.deadline import Deadline
from claudekit.errors import ClaudeError, Unauthorized
from claudekit.http import idempotency, lwa
from claudekit.http.asgi import (
    CallerLeft,
    Receive,
    Reply,
    Scope,
    Send,
    Whole,
    error_reply,
    headers_of,
    json_reply,
    raw_headers,
    read_body,
)
from claudekit.http.body import parse_json
from claudekit.http.errors import as_claude_error, validation_error
from claudekit.http.headers import JSON_HEADERS
from claudekit.settings import get_settings
from claudekit.store import ledger
from claudekit.tasks.stream import Event, StreamDelta, StreamError
from claudekit.telemetry import logger

# How long a finished or abandoned response waits for the pump to record usage. The pump
# notices a departed caller at the next upstream event, so this is normally milliseconds.
SETTLE_WAIT_SECONDS = 10.0
# no-store: a stream is per user, like every JSON response (which get JSON_HEADERS).
SSE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Accel-Buffering": "no"}
MEDIA_TYPE = "text/event-stream"

B = TypeVar("B", bound=BaseModel)
# A stream task: the validated body, the caller's identity and deadline in; its events out.
Task = Callable[[B, str, Deadline], Iterator[Event]]


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event. JSON never contains a raw newline, so one `data:` line suffices."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


async def respond(scope: Scope, receive: Receive, body_model: type[B], task: Task[B]) -> Reply:
    """Answer one streaming request: `task` run with the parsed body, as events or a JSON error."""
    headers = headers_of(scope)
    try:
        settings = get_settings()
    except ClaudeError as exc:  # a misconfigured deployment: 500, and the readiness check fails too
        return error_reply(exc, lwa.request_id(headers))
    call = lwa.invocation(headers, settings.deadline_margin_seconds, settings.stream_budget_seconds)
    user_id = call.user_id
    if user_id is None:
        return error_reply(Unauthorized(), call.request_id)
    try:
        raw = await read_body(receive)
        body = body_model.model_validate(parse_json(raw))
    except CallerLeft:
        return Whole(499)
    except ClaudeError as exc:  # malformed: not UTF-8, not JSON, too deep, too large
        return error_reply(exc, call.request_id)
    except ValidationError as exc:
        return error_reply(validation_error(list(exc.errors())), call.request_id)

    def produce() -> Iterator[Event]:
        return task(body, user_id, call.deadline)

    return await _stream(headers, scope["path"], call, raw, produce, receive)


async def _stream(
    headers: Mapping[str, str],
    path: str,
    call: lwa.Invocation,
    raw: bytes,
    produce: Callable[[], Iterator[Event]],
    receive: Receive,
) -> Reply:
    """Run `produce` on a pump; a JSON error until its first event, then the event stream."""
    global _kept
    try:
        key = idempotency.key_of(headers)
        if key is not None and call.user_id is not None:
            data = idempotency.request_data(call.user_id, "POST", path, key, raw)
            _kept = _kept or idempotency.Idempotency(get_settings().table_name)
            kept = _kept
            remaining = lwa.Remaining(call.deadline.remaining())
            replay = await anyio.to_thread.run_sync(lambda: kept.claim(data, remaining))
            if replay is not None:
                return replayed(replay, call.request_id)
            produce = _keeping(kept, data, produce)
    except Exception as exc:
        return error_reply(exc, call.request_id)
    # The pump's thread admits as this caller (its plan), and leaves the limit state here.
    admitted = ledger.Caller(frozenset(call.groups))
    pump = Pump(ledger.bind(admitted, produce))
    first = await _first_item(pump, receive)
    if first is None:  # the caller left before the first byte
        pump.stop()
        await pump.settled()
        return Whole(499)
    if isinstance(first, BaseException):
        await pump.settled()
        return error_reply(first, call.request_id, admitted.headers())
    if isinstance(first, _End):
        await pump.settled()
        return error_reply(ClaudeError("the stream ended before it started"), call.request_id)
    return EventStream(pump, first, call.request_id, admitted.headers())


# ---- idempotency --------------------------------------------------------------------------------

_kept: idempotency.Idempotency | None = None


def _keeping(
    kept: idempotency.Idempotency, data: dict[str, str], produce: Callable[[], Iterator[Event]]
) -> Callable[[], Iterator[Event]]:
    """`produce`, keeping its outcome under the Idempotency-Key when it ends: a complete stream as
    its text and `done` fields, an error before the first delta if it is final. Anything else (cut
    short, failed mid-stream, a 'try again' error) frees the key so a retry runs afresh."""

    def run() -> Iterator[Event]:
        texts: list[str] = []
        outcome: dict[str, Any] | None = None
        try:
            for item in produce():
                if isinstance(item, StreamDelta):
                    texts.append(item.text)
                else:
                    outcome = {"status": 200, "text": "".join(texts), "done": item.model_dump(mode="json")}
                yield item
        except ClaudeError as exc:
            if not texts and idempotency.final(exc.status):
                outcome = {"status": exc.status, "error": {"code": exc.code, "message": exc.message}}
            raise
        finally:
            try:
                kept.finish(data, outcome)
            except Exception as exc:  # the caller has the answer; a retry will simply run again
                logger.warning("could not keep the stream's outcome", extra={"error_type": type(exc).__name__})

    return run


def replayed(outcome: dict[str, Any], request_id: str) -> Reply:
    """A kept outcome, sent again at once: the same events in one buffered body, or the same error."""
    headers = {idempotency.REPLAYED: "true", "X-Request-Id": request_id}
    if outcome.get("status") != 200:
        body = {"error": {**outcome["error"], "request_id": request_id}}
        return json_reply(body, int(outcome["status"]), {**headers, **JSON_HEADERS})
    events = (sse("delta", {"text": outcome["text"]}) if outcome["text"] else b"") + sse("done", outcome["done"])
    return Whole(200, events, {**SSE_HEADERS, **headers}, MEDIA_TYPE)


# ---- the pump -----------------------------------------------------------------------------------


class _End:
    """The pump has finished (the generator is exhausted, failed or closed)."""


_END = _End()
Item = Event | BaseException | _End


class Pump:
    """Runs a blocking generator on a dedicated thread and hands each item to the event loop.

    Every item is queued with `call_soon_threadsafe` the moment it exists, so nothing is
    batched between the SDK and the socket. The generator is only ever advanced and closed on
    this one thread: `stop()` just asks, and the thread closes it before taking another item.
    A dedicated thread (not the shared anyio pool) keeps long streams from starving other work.
    """

    def __init__(self, produce: Callable[[], Iterator[Event]], *, name: str = "stream-pump") -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        self._stop = threading.Event()
        self._done = asyncio.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (server shutting down)
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self, produce: Callable[[], Iterator[Event]]) -> None:
        items: Iterator[Event] | None = None
        try:
            items = produce()
            while not self._stop.is_set():
                try:
                    item = next(items)
                except StopIteration:
                    break
                self._put(item)
        except BaseException as exc:
            self._put(exc)
        finally:
            # Closing a suspended generator closes the upstream connection and records usage.
            close = getattr(items, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:
                    logger.error("closing the stream failed", exc_info=(type(exc), exc, exc.__traceback__))
            self._put(_END)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._done.set)

    async def get(self) -> Item:
        return await self._queue.get()

    def stop(self) -> None:
        self._stop.set()

    async def settled(self, timeout: float = SETTLE_WAIT_SECONDS) -> None:
        """Wait (bounded, shielded from cancellation) until the thread has closed the generator."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            await self._done.wait()


async def _disconnected(receive: Receive) -> None:
    """Return when the caller has gone away.

    Called only after the body has been read, when a conforming server's `receive` has nothing
    left to deliver but `http.disconnect`. Anything else means a server (or shim) that does not
    report disconnects this way: stop listening rather than spin on it.
    """
    message = await receive()
    if message["type"] == "http.disconnect":
        return
    await anyio.sleep_forever()


async def _first_item(pump: Pump, receive: Receive) -> Item | None:
    """The first item decides the status: wait for it, or None if the caller leaves first."""
    got: list[Item] = []
    async with anyio.create_task_group() as group:

        async def take_first() -> None:
            got.append(await pump.get())
            group.cancel_scope.cancel()

        group.start_soon(take_first)
        await _disconnected(receive)
        group.cancel_scope.cancel()
    return got[0] if got else None


# ---- the response -------------------------------------------------------------------------------


class EventStream:
    """The SSE response: writes `first`, then everything the pump produces, one send per event.

    A concurrent listener notices the caller leaving and stops the pump, as Starlette's own
    StreamingResponse does, but here we also wait for the pump to settle usage.
    """

    def __init__(self, pump: Pump, first: Event, request_id: str, headers: Mapping[str, str]) -> None:
        self.pump = pump
        self.first = first
        self.request_id = request_id
        self.headers = raw_headers({**SSE_HEADERS, **headers, "X-Request-Id": request_id}, MEDIA_TYPE)
        self._complete = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # ASGI >= 2.4 servers raise on a dead socket
                        await self._stream(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await _disconnected(receive)
                if not self._complete:  # a server also reports disconnect once the response is complete
                    logger.info("client disconnected mid-stream", extra={"request_id": self.request_id})
                group.cancel_scope.cancel()
        finally:
            self.pump.stop()
            await self.pump.settled()

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        item: Item = self.first
        while True:
            if isinstance(item, StreamDelta):
                await send({"type": "http.response.body", "body": sse("delta", item.model_dump()), "more_body": True})
            else:
                await send({"type": "http.response.body", "body": self._last(item), "more_body": True})
                break
            item = await self.pump.get()
        self._complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _last(self, item: Item) -> bytes:
        """The event that ends the stream: `done`, or `error` if it failed or was closed under us."""
        if isinstance(item, BaseModel):
            return sse("done", item.model_dump(mode="json"))
        exc = as_claude_error(item, self.request_id) if isinstance(item, BaseException) else None
        exc = exc or ClaudeError("the stream ended unexpectedly")
        return sse("error", StreamError(code=exc.code, message=exc.message).model_dump())
