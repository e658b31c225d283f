"""Plain ASGI for the streaming function's app: whole responses, the body, CORS, routing errors
and the readiness check.

The layer ships no web framework (the REST functions need none), so the streaming glue speaks
ASGI itself; the stream function's Starlette app routes to it, and any ASGI callable is a
response there.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol

import anyio

from claudekit.errors import ClaudeError, ConfigurationError, MalformedRequest, NotFound
from claudekit.http import lwa
from claudekit.http.errors import error_response
from claudekit.http.headers import cors_headers
from claudekit.telemetry import logger

# ASGI's own types (the same shapes as starlette.types).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit


class Reply(Protocol):
    """A response: anything that can answer one ASGI request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


class MethodNotAllowed(ClaudeError):
    code = "METHOD_NOT_ALLOWED"
    status = 405
    default_message = "method not allowed"


class CallerLeft(Exception):
    """The caller disconnected before its body was read."""


def raw_headers(headers: Mapping[str, str], media_type: str | None = None, length: int | None = None) -> list[Any]:
    """ASGI headers: lower-case names, then Content-Length and Content-Type unless given."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    names = {name for name, _ in raw}
    if length is not None and b"content-length" not in names:
        raw.append((b"content-length", str(length).encode()))
    if media_type is not None and b"content-type" not in names:
        text = media_type.startswith("text/") and "charset=" not in media_type
        raw.append((b"content-type", (f"{media_type}; charset=utf-8" if text else media_type).encode("latin-1")))
    return raw


class Whole:
    """A response sent in one piece."""

    def __init__(
        self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, media_type: str | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.media_type = media_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = None if self.status < 200 or self.status in (204, 304) else len(self.body)
        headers = raw_headers(self.headers, self.media_type, length)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def json_reply(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Whole:
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Whole(status, text.encode(), headers, "application/json")


def error_reply(exc: BaseException, request_id: str, headers: Mapping[str, str] | None = None) -> Whole:
    """`exc` through the one error map (errors.py), plus `headers` (the caller's rate-limit window)."""
    error = error_response(exc, request_id)
    return json_reply(error.body, error.status, {**error.headers, **(headers or {})})


def headers_of(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


async def read_body(receive: Receive) -> bytes:
    """The body, refused once it exceeds what API Gateway would pass (the same rule as the REST routes)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise CallerLeft()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise MalformedRequest("body exceeds 10 MB")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# Exception handlers for the app. They return a Reply; Starlette types handlers as returning its Response.


async def routing_error(request: HasHeaders, exc: Exception) -> Any:
    """A request no route takes (404 unknown path, 405 wrong method), in the contract's error shape."""
    status = getattr(exc, "status_code", 500)
    error = {404: NotFound("no such route"), 405: MethodNotAllowed()}.get(status) or ClaudeError()
    return error_reply(error, lwa.request_id(request.headers))


async def bug(request: HasHeaders, exc: Exception) -> Any:
    """Anything a route did not handle: logged with its traceback, answered 500."""
    return error_reply(exc, lwa.request_id(request.headers))


async def ready(request: HasHeaders) -> Any:
    """LWA's readiness check (AWS_LWA_READINESS_CHECK_PATH): 503 until the settings are valid,
    with the client built and the key fetched before the first request (lwa.warm_up)."""
    try:
        await anyio.to_thread.run_sync(lwa.warm_up)
    except ConfigurationError as exc:
        logger.critical("stream function is misconfigured", extra={"reason": exc.message})
        return json_reply({"status": "misconfigured"}, 503)
    return json_reply({"status": "ok"})


def with_cors(inner: App) -> App:
    """`inner`, with the configured CORS headers added to every response it starts."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode(), v.encode()) for k, v in cors_headers().items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await inner(scope, receive, send_with_cors)

    return app
