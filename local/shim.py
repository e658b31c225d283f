"""An API Gateway stand-in: HTTP requests in, REST API proxy events to the handlers, responses out.

Routes come from template.yaml's Api events, so the local stack serves exactly what deploys.
Every function runs as a pool of instances (local.instances: a process each, one request at a
time, as Lambda runs them). Zip functions get a proxy event (authorizer claims from
`X-User-Id`); a function behind the Lambda Web Adapter gets the raw HTTP request, proxied to an
instance's own server with the `x-amzn-request-context` header LWA adds, its response streamed
back as it is written.

Every response carries X-Request-Id, and every JSON one nosniff and no-store, the shim's own
errors included (as the template's GatewayResponses do deployed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool

from local import docs
from local.instances import FunctionPool, WebAdapterPool, WebInstance
from local.lambda_context import LambdaContext

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "claude"
# In Lambda the layer is on the path as /opt/python; locally it is this folder.
if str(LAYER) not in sys.path:
    sys.path.insert(0, str(LAYER))
STAGE = "v1"
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
DEFAULT_USER = "local-user"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Route:
    method: str
    path: str  # as in the template, e.g. /jobs/{id}
    function: str  # logical id
    handler: FunctionPool | None = None  # a zip function's instances
    web: WebAdapterPool | None = None  # a web-adapter function's instances
    timeout: float = 30.0

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        found = re.match(pattern, path)
        return found.groupdict() if found else None


def routes_from_template(doc: dict[str, Any], default_timeout: float) -> list[Route]:
    """The template's Api routes. Zip functions get a FunctionPool each (not started: see `pools`)."""
    routes: list[Route] = []
    for logical, resource in doc.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        api_events = [e["Properties"] for e in props.get("Events", {}).values() if e.get("Type") == "Api"]
        if not api_events:
            continue
        code = ROOT / props["CodeUri"]
        handler_name = str(props.get("Handler", "app.handler"))
        timeout = float(props["Timeout"]) if isinstance(props.get("Timeout"), int | float) else default_timeout
        if handler_name.endswith(".sh"):  # behind the Lambda Web Adapter: run.sh serves app.py's `app`
            env = props.get("Environment", {}).get("Variables", {})
            readiness = str(env.get("AWS_LWA_READINESS_CHECK_PATH", "/"))
            web, pool = WebAdapterPool(logical, code, timeout=timeout, readiness_path=readiness), None
        else:
            web, pool = None, FunctionPool(logical, code, handler_name.split(".")[-1], timeout=timeout)
        for event in api_events:
            route = Route(method=event["Method"].upper(), path=event["Path"], function=logical, timeout=timeout)
            route.web, route.handler = web, pool
            routes.append(route)
    return routes


def pools(routes: list[Route]) -> list[FunctionPool | WebAdapterPool]:
    """Each function's pool once (a function may serve several routes)."""
    found: dict[int, FunctionPool | WebAdapterPool] = {}
    for route in routes:
        for pool in (route.handler, route.web):
            if pool is not None:
                found.setdefault(id(pool), pool)
    return list(found.values())


def request_context(route: Route, method: str, path: str, user: str, request_id: str, source_ip: str) -> dict[str, Any]:
    return {
        "resourcePath": route.path,
        "httpMethod": method,
        "path": f"/{STAGE}{path}",
        "stage": STAGE,
        "requestId": request_id,
        "requestTimeEpoch": int(time.time() * 1000),
        "accountId": "123456789012",
        "apiId": "local",
        "protocol": "HTTP/1.1",
        "identity": {"sourceIp": source_ip},
        "authorizer": {"claims": {"sub": user, "cognito:username": user}},
    }


def proxy_event(
    route: Route,
    params: dict[str, str],
    method: str,
    path: str,
    headers: dict[str, str],
    query: dict[str, list[str]],
    body: bytes,
    context: dict[str, Any],
) -> dict[str, Any]:
    """A REST API (v1) proxy integration event, as `sam local generate-event apigateway aws-proxy`."""
    try:
        text: str | None = body.decode() if body else None
        encoded = False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": context,
        "body": text,
        "isBase64Encoded": encoded,
    }


class ApiGatewayShim:
    """The ASGI app `make run` serves."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        # HTTP header bytes are ISO-8859-1 (RFC 9110): any byte decodes, so a client's odd header is
        # passed on as API Gateway would pass it, never a 500 from the shim.
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = str(uuid.uuid4())
        if method == "GET" and (docs_page := docs.page(path)) is not None:  # Swagger UI, local only
            await _send_bytes(send, 200, *docs_page, request_id)
            return
        if method == "GET" and path == "/":
            await _send_playground(send)
            return
        matched = [(r, p) for r in self.routes if (p := r.match(method, path)) is not None]
        if not matched:
            # A REST API answers an undeclared method like an unknown path (its MISSING_AUTHENTICATION_TOKEN
            # response, which the template maps to 404 NOT_FOUND).
            await _send_json(send, 404, _error("NOT_FOUND", f"no route for {method} {path}", request_id), request_id)
            return
        route, params = matched[0]
        # Locally the caller picks the identity; deployed, the Cognito authorizer sets it.
        user = headers.get("x-user-id") or DEFAULT_USER
        client = scope.get("client") or ("127.0.0.1", 0)
        context = request_context(route, method, path, user, request_id, str(client[0]))
        if headers.get("x-user-groups"):  # stands in for the Cognito groups claim (plans, admin)
            context["authorizer"]["claims"]["cognito:groups"] = headers["x-user-groups"]

        body = await _read_body(receive)
        if body is None:  # deployed, the REQUEST_TOO_LARGE gateway response says the same
            await _send_json(send, 400, _error("VALIDATION_ERROR", "body exceeds 10 MB", request_id), request_id)
            return

        if route.web is not None:
            # What the Lambda Web Adapter does: pass the request through with the API context attached.
            raw = [(k, v) for k, v in scope["headers"] if k.lower() != b"x-amzn-request-context"]
            raw.append((b"x-amzn-request-context", json.dumps(context).encode()))
            await _proxy(route, route.web, scope, raw, body, receive, send, request_id)
            return

        query: dict[str, list[str]] = {}
        for pair in scope.get("query_string", b"").decode("latin-1").split("&"):
            if pair:
                key, _, value = pair.partition("=")
                query.setdefault(key, []).append(value)
        event = proxy_event(route, params, method, path, headers, query, body, context)
        lambda_context = LambdaContext(route.function, route.timeout)
        assert route.handler is not None
        try:
            result = await run_in_threadpool(route.handler, event, lambda_context)
        except Exception:
            # Lambda would report a failed invocation; API Gateway answers 502.
            await _send_json(send, 502, _error("INTERNAL_ERROR", "the function failed", request_id), request_id)
            return
        await _send_result(send, result)


# Headers that describe one hop of HTTP, not the request or response itself.
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host", b"expect", b"upgrade"}


async def _proxy(
    route: Route,
    pool: WebAdapterPool,
    scope: Scope,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    receive: Receive,
    send: Send,
    request_id: str,
) -> None:
    """One request to one idle instance; its response relayed chunk by chunk, as it is written.

    If the caller goes away, the connection to the instance closes too, so the function sees the
    disconnect just as it would behind LWA. Past the function's timeout the instance is replaced.
    """
    instance = await pool.acquire()
    started: list[bool] = []  # set by _relay the moment the response starts
    failed = False
    with anyio.move_on_after(route.timeout + 5) as limit:
        async with anyio.create_task_group() as group:

            async def relay() -> None:
                nonlocal failed
                try:
                    await _relay(instance, scope, headers, body, send, started)
                except (OSError, EOFError, ValueError, IndexError, asyncio.IncompleteReadError):
                    failed = True  # the instance broke the connection (or the caller did, mid-send)
                group.cancel_scope.cancel()

            group.start_soon(relay)
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()  # the caller left: closing our side tells the function
    # Past its timeout Lambda stops the environment; a crashed one is gone anyway.
    await pool.release(instance, healthy=not limit.cancelled_caught and instance.process.is_alive())
    if started:
        return
    if limit.cancelled_caught:  # API Gateway answers for a function that ran out of time
        await _send_json(send, 504, _error("UPSTREAM_TIMEOUT", "the function timed out", request_id), request_id)
    elif failed:  # Lambda reports a failed invocation; API Gateway answers 502
        await _send_json(send, 502, _error("INTERNAL_ERROR", "the function failed", request_id), request_id)


async def _relay(
    instance: WebInstance,
    scope: Scope,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    send: Send,
    started: list[bool],
) -> None:
    """HTTP/1.1 to the instance and back; `started` gets an entry once the response has begun."""
    reader, writer = await asyncio.open_connection("127.0.0.1", instance.port)
    try:
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        lines = [scope["method"].encode() + b" " + target + b" HTTP/1.1", b"host: 127.0.0.1"]
        lines += [k + b": " + v for k, v in headers if k.lower() not in HOP_BY_HOP]
        lines += [b"content-length: " + str(len(body)).encode(), b"connection: close"]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        response_headers: list[tuple[bytes, bytes]] = []
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            response_headers.append((name.strip().lower(), value.strip()))
        chunked = (b"transfer-encoding", b"chunked") in response_headers
        forward = [
            (k, v) for k, v in response_headers if k not in HOP_BY_HOP or (k == b"content-length" and not chunked)
        ]
        await send({"type": "http.response.start", "status": status, "headers": forward})
        started.append(True)
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                chunk = await reader.readexactly(size)
                await reader.readline()
            else:
                chunk = await reader.read(65536)
                if not chunk:
                    break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _error(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


async def _send_playground(send: Send) -> None:
    """The playground page (local/playground.html): one static file, served only by the local stack."""
    page = (ROOT / "local" / "playground.html").read_bytes()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": page})


async def _send_json(send: Send, status: int, body: dict[str, Any], request_id: str) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"x-request-id", request_id.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _send_bytes(send: Send, status: int, body: bytes, content_type: str, request_id: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"x-request-id", request_id.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_result(send: Send, result: dict[str, Any]) -> None:
    """Turn a proxy integration result into the HTTP response."""
    headers: list[tuple[bytes, bytes]] = []
    for key, value in (result.get("headers") or {}).items():
        headers.append((key.lower().encode(), str(value).encode()))
    for key, values in (result.get("multiValueHeaders") or {}).items():
        if key.lower().encode() not in {k for k, _ in headers}:
            headers.extend((key.lower().encode(), str(v).encode()) for v in values)
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    await send({"type": "http.response.start", "status": int(result.get("statusCode", 200)), "headers": headers})
    await send({"type": "http.response.body", "body": data})
