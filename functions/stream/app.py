"""POST /stream: Claude's answer as server-sent events, through the Lambda Web Adapter (LWA).

Lambda's managed Python runtime cannot stream, so this function is an ASGI app that `run.sh`
starts under uvicorn; LWA turns each invocation into an HTTP request to it and streams the
response back through API Gateway (`ResponseTransferMode: RESPONSE_STREAM`).

The order of one request, and why:

1. Identity from `x-amzn-request-context` only (LWA sets it from API Gateway's request context,
   replacing any header of that name the caller sent). No identity -> 401 UNAUTHORIZED.
2. The body is validated exactly like /generate (GenerateBody, the same error mapping).
3. `ClaudeClient.stream` runs in a worker thread of its own. We wait for its first item
   *before* starting the response, so every failure before the first byte (limits, caps,
   retries exhausted, circuit open) is an ordinary JSON error with its status and headers.
4. Then `text/event-stream`: each delta is handed to the event loop the moment the SDK
   yields it and written to the socket at once (no buffering in between), then `done`, or
   `error` if the upstream fails mid-stream, and the response ends.
5. If the caller goes away, the worker closes the upstream generator (on its own thread, so
   the generator is never touched from two threads) and the client's `finally` still records
   usage, cost and metrics. The response waits, bounded, for that bookkeeping so Lambda does
   not freeze the environment before it is done.
"""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from claudekit.claude.client import ClaudeClient, get_client
from claudekit.claude.request import ClaudeResult, Delta
from claudekit.claude.secret import get_api_key
from claudekit.deadline import Deadline
from claudekit.errors import ClaudeError, ConfigurationError, MalformedRequest, NotFound, Unauthorized
from claudekit.http import idempotency, rest
from claudekit.http.body import parse_json
from claudekit.settings import get_settings
from claudekit.store import ledger
from claudekit.store.conversations import ConversationStore
from claudekit.tasks import conversations, generate
from claudekit.tasks.conversations import ConversationMessageBody
from claudekit.tasks.generate import GenerateBody
from claudekit.tasks.stream import ConversationStreamDone, StreamDelta, StreamDone, StreamError
from claudekit.telemetry import logger

FEATURE = "stream"
REQUEST_CONTEXT_HEADER = "x-amzn-request-context"
LAMBDA_CONTEXT_HEADER = "x-amzn-lambda-context"
# Without a forwarded Lambda context (the local stack), assume the template's Timeout for StreamFunction.
DEFAULT_DEADLINE_SECONDS = 120.0
# How long a finished or abandoned response waits for the worker to record usage. The worker
# notices a departed caller at the next upstream event, so this is normally milliseconds.
SETTLE_WAIT_SECONDS = 10.0

# no-store: a stream is per user, like every JSON response (which get rest.JSON_HEADERS).
SSE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Accel-Buffering": "no"}
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit

Item = Delta | ClaudeResult


class MethodNotAllowed(ClaudeError):
    code = "METHOD_NOT_ALLOWED"
    status = 405
    default_message = "method not allowed"


# ---- the invocation: identity, request id, deadline ------------------------------------------


@dataclass(frozen=True)
class Invocation:
    request_id: str
    user_id: str | None
    deadline: Deadline
    groups: tuple[str, ...] = ()


def _json_header(headers: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = headers.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def invocation(headers: Mapping[str, str], margin: float, budget: float | None = None) -> Invocation:
    """Read who is calling and how long we may take from the headers LWA adds.

    Identity comes ONLY from the API Gateway request context (`authorizer.claims.sub`), never
    from the body or an `X-User-Id` header.
    """
    context = _json_header(headers, REQUEST_CONTEXT_HEADER)
    authorizer = context.get("authorizer")
    claims = authorizer.get("claims") if isinstance(authorizer, dict) else None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    request_id = context.get("requestId")
    lambda_context = _json_header(headers, LAMBDA_CONTEXT_HEADER)
    deadline_ms = lambda_context.get("deadline", lambda_context.get("deadline_ms"))
    if isinstance(deadline_ms, int | float) and not isinstance(deadline_ms, bool) and deadline_ms > 0:
        remaining = deadline_ms / 1000 - time.time()
    else:
        remaining = DEFAULT_DEADLINE_SECONDS
    # API Gateway counts the stream's integration timeout from the request, before a cold start.
    epoch = context.get("requestTimeEpoch")
    request_time_ms = float(epoch) if isinstance(epoch, int | float) and not isinstance(epoch, bool) else None
    return Invocation(
        request_id=str(request_id) if isinstance(request_id, str) and request_id else str(uuid.uuid4()),
        user_id=str(sub) if isinstance(sub, str) and sub else None,
        groups=tuple(ledger.parse_groups(claims.get("cognito:groups"))) if isinstance(claims, dict) else (),
        deadline=Deadline.for_request(
            _Remaining(remaining), request_time_ms=request_time_ms, budget=budget or remaining, margin=margin
        ),
    )


@dataclass(frozen=True)
class _Remaining:
    """The Lambda time left, as Deadline.for_request reads it from a context."""

    seconds: float

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


# ---- responses ---------------------------------------------------------------------------------


def error_response(exc: ClaudeError, request_id: str) -> JSONResponse:
    return JSONResponse(
        rest.error_body(exc, request_id), status_code=exc.status, headers=rest.error_headers(exc, request_id)
    )


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event. JSON never contains a raw newline, so one `data:` line suffices."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


def done_fields(result: ClaudeResult) -> dict[str, Any]:
    return StreamDone(model=result.model, stop_reason=result.stop_reason, **_usage_and_cost(result)).model_dump(
        mode="json"
    )


def _usage_and_cost(result: ClaudeResult) -> dict[str, Any]:
    fields = rest.result_fields(result)
    return {"usage": fields["usage"], "cost_usd": fields["cost_usd"]}


def as_claude_error(exc: BaseException, request_id: str) -> ClaudeError:
    """What the caller is told. Anything but a ClaudeError is a bug: logged, reported as 500."""
    if isinstance(exc, ClaudeError):
        return exc
    logger.error(
        "unhandled error in stream",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"error_type": type(exc).__name__, "request_id": request_id},
    )
    return ClaudeError()


# ---- the worker thread -------------------------------------------------------------------------


class _End:
    """The worker has finished (the generator is exhausted, failed or closed)."""


_END = _End()


class Pump:
    """Runs a blocking generator on a dedicated thread and hands each item to the event loop.

    Every item is queued with `call_soon_threadsafe` the moment it exists, so nothing is
    batched between the SDK and the socket. The generator is only ever advanced and closed on
    this one thread: `stop()` just asks, and the worker closes it before taking another item.
    A dedicated thread (not the shared anyio pool) keeps long streams from starving other work.
    """

    def __init__(self, produce: Callable[[], Iterator[Item]], *, name: str = "stream-pump") -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Item | BaseException | _End] = asyncio.Queue()
        self._stop = threading.Event()
        self._done = asyncio.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Item | BaseException | _End) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (server shutting down)
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self, produce: Callable[[], Iterator[Item]]) -> None:
        items: Iterator[Item] | None = None
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

    async def get(self) -> Item | BaseException | _End:
        return await self._queue.get()

    def stop(self) -> None:
        self._stop.set()

    async def settled(self, timeout: float = SETTLE_WAIT_SECONDS) -> None:
        """Wait (bounded, shielded from cancellation) until the worker has closed the generator."""
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


class EventStream(Response):
    """The SSE response: writes `first`, then everything the pump produces, one send per event.

    A concurrent listener notices the caller leaving and stops the pump, as Starlette's own
    StreamingResponse does, but here we also wait for the worker to settle usage.
    """

    media_type = "text/event-stream"
    charset = "utf-8"

    def __init__(
        self,
        pump: Pump,
        first: Item,
        request_id: str,
        headers: Mapping[str, str],
        done: Callable[[ClaudeResult], dict[str, Any]] = done_fields,
    ) -> None:
        self.pump = pump
        self.done = done
        self.first = first
        self.request_id = request_id
        self.status_code = 200
        self.background = None
        self._complete = False
        self.init_headers({**SSE_HEADERS, **headers, "X-Request-Id": request_id})

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
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        item: Item | BaseException | _End = self.first
        while True:
            if isinstance(item, Delta):
                await send(
                    {
                        "type": "http.response.body",
                        "body": sse("delta", StreamDelta(text=item.text).model_dump()),
                        "more_body": True,
                    }
                )
            elif isinstance(item, ClaudeResult):
                await send({"type": "http.response.body", "body": sse("done", self.done(item)), "more_body": True})
                break
            elif isinstance(item, BaseException):
                exc = as_claude_error(item, self.request_id)
                body = sse("error", StreamError(code=exc.code, message=exc.message).model_dump())
                await send({"type": "http.response.body", "body": body, "more_body": True})
                break
            else:  # the worker ended without a result: the stream was closed under us
                exc = ClaudeError("the stream ended unexpectedly")
                body = sse("error", StreamError(code=exc.code, message=exc.message).model_dump())
                await send({"type": "http.response.body", "body": body, "more_body": True})
                break
            item = await self.pump.get()
        self._complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---- the endpoints -----------------------------------------------------------------------------


async def _first_item(pump: Pump, receive: Receive) -> Item | BaseException | _End | None:
    """The first item decides the status: wait for it, or None if the caller leaves first."""
    got: list[Item | BaseException | _End] = []
    async with anyio.create_task_group() as group:

        async def take_first() -> None:
            got.append(await pump.get())
            group.cancel_scope.cancel()

        group.start_soon(take_first)
        await _disconnected(receive)
        group.cancel_scope.cancel()
    return got[0] if got else None


async def _read_body(request: Request) -> bytes:
    """The body, refused once it exceeds what API Gateway would pass (the same rule as the REST routes)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise MalformedRequest("body exceeds 10 MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def stream(request: Request) -> Response:
    try:
        margin = get_settings().deadline_margin_seconds
    except ClaudeError as exc:  # a misconfigured deployment: 500, and the healthz check fails too
        return error_response(exc, invocation(request.headers, 0).request_id)
    call = invocation(request.headers, margin, get_settings().stream_budget_seconds)
    if call.user_id is None:
        return error_response(Unauthorized(), call.request_id)
    try:
        raw = await _read_body(request)
        body = GenerateBody.model_validate(parse_json(raw))
    except ClaudeError as exc:  # malformed: not UTF-8, not JSON, too deep, too large
        return error_response(exc, call.request_id)
    except ValidationError as exc:
        return error_response(rest.validation_error(list(exc.errors())), call.request_id)
    try:
        client: ClaudeClient = await anyio.to_thread.run_sync(get_client)
    except Exception as exc:
        return error_response(as_claude_error(exc, call.request_id), call.request_id)

    claude_request = generate.generate_request(body, call.user_id, feature=FEATURE)
    return await _respond(request, call, raw, lambda: client.stream(claude_request, call.deadline))


async def _respond(
    request: Request,
    call: Invocation,
    raw: bytes,
    produce: Callable[[], Iterator[Item]],
    done: Callable[[ClaudeResult], dict[str, Any]] = done_fields,
) -> Response:
    """Run `produce` on a pump; a JSON error until its first item, then the event stream.
    With an Idempotency-Key, a request seen before is answered from its kept outcome instead."""
    global _idempotency
    try:
        key = idempotency.key_of(request.headers)
        if key is not None and call.user_id is not None:
            data = idempotency.request_data(call.user_id, "POST", request.url.path, key, raw)
            _idempotency = _idempotency or idempotency.Idempotency(get_settings().table_name)
            kept = _idempotency
            remaining = _Remaining(call.deadline.remaining())
            replay = await anyio.to_thread.run_sync(lambda: kept.claim(data, remaining))
            if replay is not None:
                return replayed(replay, call.request_id)
            produce = _keeping(kept, data, produce, done)
    except Exception as exc:
        return error_response(as_claude_error(exc, call.request_id), call.request_id)
    # The pump's thread admits as this caller (its plan), and leaves the limit state here.
    admitted = ledger.Caller(frozenset(call.groups))
    pump = Pump(ledger.bind(admitted, produce))
    first = await _first_item(pump, request.receive)
    if first is None:  # the caller left before the first byte
        pump.stop()
        await pump.settled()
        return Response(status_code=499)
    if isinstance(first, BaseException):
        await pump.settled()
        refused = error_response(as_claude_error(first, call.request_id), call.request_id)
        refused.headers.update(admitted.headers())
        return refused
    if isinstance(first, _End):
        await pump.settled()
        return error_response(ClaudeError("the stream ended before it started"), call.request_id)
    return EventStream(pump, first, call.request_id, admitted.headers(), done)


_conversation_store: ConversationStore | None = None
_idempotency: idempotency.Idempotency | None = None


def _keeping(
    kept: idempotency.Idempotency,
    data: dict[str, str],
    produce: Callable[[], Iterator[Item]],
    done: Callable[[ClaudeResult], dict[str, Any]],
) -> Callable[[], Iterator[Item]]:
    """`produce`, keeping its outcome under the Idempotency-Key when it ends: a complete stream as
    its text and `done` fields, an error before the first delta if it is final. Anything else (cut
    short, failed mid-stream, a 'try again' error) frees the key so a retry runs afresh."""

    def run() -> Iterator[Item]:
        texts: list[str] = []
        outcome: dict[str, Any] | None = None
        try:
            for item in produce():
                if isinstance(item, Delta):
                    texts.append(item.text)
                elif isinstance(item, ClaudeResult):
                    outcome = {"status": 200, "text": "".join(texts), "done": done(item)}
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


def replayed(outcome: dict[str, Any], request_id: str) -> Response:
    """A kept outcome, sent again at once: the same events in one buffered body, or the same error."""
    headers = {idempotency.REPLAYED: "true", "X-Request-Id": request_id}
    if outcome.get("status") != 200:
        body = {"error": {**outcome["error"], "request_id": request_id}}
        return JSONResponse(body, status_code=int(outcome["status"]), headers={**headers, **rest.JSON_HEADERS})
    events = (sse("delta", {"text": outcome["text"]}) if outcome["text"] else b"") + sse("done", outcome["done"])
    return Response(events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})


async def conversation_stream(request: Request) -> Response:
    """POST /conversations/{id}/stream: a conversation turn as the same events as /stream; the
    `done` event carries the buffered route's fields but `text`. The turn is recorded before
    `done` is sent; a turn that fails mid-stream is not recorded."""
    global _conversation_store
    try:
        margin = get_settings().deadline_margin_seconds
    except ClaudeError as exc:
        return error_response(exc, invocation(request.headers, 0).request_id)
    call = invocation(request.headers, margin, get_settings().stream_budget_seconds)
    if call.user_id is None:
        return error_response(Unauthorized(), call.request_id)
    user_id = call.user_id
    try:
        raw = await _read_body(request)
        body = ConversationMessageBody.model_validate(parse_json(raw))
    except ClaudeError as exc:
        return error_response(exc, call.request_id)
    except ValidationError as exc:
        return error_response(rest.validation_error(list(exc.errors())), call.request_id)
    try:
        client: ClaudeClient = await anyio.to_thread.run_sync(get_client)
    except Exception as exc:
        return error_response(as_claude_error(exc, call.request_id), call.request_id)
    store = _conversation_store = _conversation_store or ConversationStore(client.settings)
    conversation_id = str(request.path_params["conversation_id"])
    turns: list[conversations.Turn] = []

    def produce() -> Iterator[Item]:
        # Reading the history and compacting it may fail or call Claude: on the pump's thread,
        # so their errors are JSON errors like any before the first delta.
        conv = store.get(conversation_id, user_id)
        turns.append(conversations.prepare(client, store, conv, body.prompt, body.max_tokens, user_id, call.deadline))
        yield from conversations.stream(client, store, turns[0], call.deadline)

    def done(result: ClaudeResult) -> dict[str, Any]:
        fields = conversations.turn_fields(turns[0], result)
        fields.pop("text")
        return ConversationStreamDone(**fields).model_dump(mode="json")

    return await _respond(request, call, raw, produce, done)


_warm = False


def _warm_up() -> None:
    """Build the client and fetch the API key once, during LWA's readiness check (the init phase).

    A misconfiguration (settings) fails readiness loudly; a secret that cannot be fetched yet is
    only logged, so the first request retries rather than the environment never becoming ready.
    """
    global _warm
    if _warm:
        return
    client = get_client()
    try:
        get_api_key(client.settings.claude_secret_id, max_age=client.settings.secret_max_age_seconds)
    except ConfigurationError as exc:
        logger.warning("could not prefetch the API key", extra={"reason": exc.message})
    _warm = True


async def healthz(request: Request) -> Response:
    """LWA's readiness check (AWS_LWA_READINESS_CHECK_PATH). 503 until the settings are valid."""
    try:
        await anyio.to_thread.run_sync(_warm_up)
    except ConfigurationError as exc:
        logger.critical("stream function is misconfigured", extra={"reason": exc.message})
        return JSONResponse({"status": "misconfigured"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's routing errors (unknown path, wrong method) in the contract's error shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error = {404: NotFound("no such route"), 405: MethodNotAllowed()}.get(status) or ClaudeError()
    rid = invocation(request.headers, 0).request_id
    return error_response(error, rid)


async def _bug(request: Request, exc: Exception) -> Response:
    rid = invocation(request.headers, 0).request_id
    return error_response(as_claude_error(exc, rid), rid)


def _with_cors(inner: Starlette) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The app, with the configured CORS headers added to every response it starts."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode(), v.encode()) for k, v in rest.cors_headers().items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await inner(scope, receive, send_with_cors)

    return app


app = _with_cors(
    Starlette(
        routes=[
            Route("/stream", stream, methods=["POST"]),
            Route("/conversations/{conversation_id}/stream", conversation_stream, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _bug},
    )
)

snapstart.initialised()  # every import done: the collector runs again, past init's objects
