"""HTTP glue shared by the REST functions: one place maps errors to responses.

Every error leaves as `{"error": {"code", "message", "request_id"}}` with the status
the contract names, `Retry-After` where waiting helps, and `X-Request-Id` always.
Every JSON response is per user: `nosniff` and `no-store` on all of them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any, get_args

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from claudekit import telemetry
from claudekit.claude.client import get_client
from claudekit.claude.request import ClaudeResult
from claudekit.deadline import Deadline
from claudekit.errors import ClaudeError, Forbidden, InvalidRequest, MalformedRequest, NotFound, Unauthorized
from claudekit.http import idempotency, openapi
from claudekit.http.body import parse_json
from claudekit.settings import get_settings
from claudekit.store import ledger
from claudekit.tasks.jobs.models import JobTask
from claudekit.telemetry import logger

# On every JSON response, errors included: bodies are per user and must never be sniffed or cached.
JSON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


# The routes' OpenAPI `responses`: the success model and the error envelope of each status it can return.
responses = openapi.responses

# What a field name or list index of our contract looks like (anything else came from the caller).
_FIELD = re.compile(r"[A-Za-z0-9_]{1,64}")
# A union branch in a pydantic location: a model's name (no contract field is CamelCase) or a
# validator's label such as `function-after[check_text(), constrained-str]`.
_BRANCH = re.compile(r"[A-Z][A-Za-z0-9]*|[a-z-]+\[.*\]")
_JOB_TASKS = frozenset(get_args(JobTask))


def request_id(app: APIGatewayRestResolver) -> str:
    return str(app.current_event.request_context.request_id or "")


def caller(app: APIGatewayRestResolver) -> str:
    """The authorizer's identity (Cognito `sub`). Never a body field or a client header."""
    claims = app.current_event.request_context.authorizer.claims or {}
    sub = claims.get("sub")
    if not sub:
        raise Unauthorized()
    return str(sub)


def require_group(app: APIGatewayRestResolver, group: str) -> None:
    """403 unless the caller's Cognito groups (the `cognito:groups` claim) include `group`."""
    caller(app)
    claims = app.current_event.request_context.authorizer.claims or {}
    if group not in ledger.parse_groups(claims.get("cognito:groups")):
        raise Forbidden()


def deadline(app: APIGatewayRestResolver) -> Deadline:
    """API Gateway's budget counted from the request (init time included), within Lambda's own."""
    s = get_settings()
    epoch = app.current_event.request_context.request_time_epoch
    return Deadline.for_request(
        app.lambda_context,
        request_time_ms=float(epoch) if epoch else None,
        budget=s.request_budget_seconds,
        margin=s.deadline_margin_seconds,
    )


def respond(app: APIGatewayRestResolver, body: BaseModel | dict[str, Any], status: int = 200) -> Response[Any]:
    """The route's model as the body: the resolver validates it against the handler's declared
    `Response[Model]` (a mismatch is a 500, our bug) and serialises it, so the OpenAPI document
    tells the truth about responses."""
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers={"X-Request-Id": request_id(app), **JSON_HEADERS},
    )


def result_fields(result: ClaudeResult) -> dict[str, Any]:
    """The fields every Claude-backed response shares."""
    return {"model": result.model, "usage": result.usage.public(), "cost_usd": float(result.cost_usd)}


def lambda_handler(app: APIGatewayRestResolver) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda entry point for a REST function: correlation id in logs, a trace, then the router.

    Called at import, so the settings are parsed and the client built in Lambda's init phase: a
    bad variable fails the cold start with its name, not the first request.
    """
    get_client()

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @telemetry.tracer.capture_lambda_handler  # built here: the stream function imports this module, never traces
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # The API speaks only JSON: parse every body as JSON, whatever Content-Type says
        # (curl -d sends form encoding), so a bad body is a clear 400, not a confusing 422.
        for key in ("headers", "multiValueHeaders"):
            headers = {k: v for k, v in (event.get(key) or {}).items() if k.lower() != "content-type"}
            headers["content-type"] = "application/json" if key == "headers" else ["application/json"]
            event[key] = headers
        rid = str((event.get("requestContext") or {}).get("requestId") or "")
        claims = ((event.get("requestContext") or {}).get("authorizer") or {}).get("claims") or {}
        with ledger.request(ledger.parse_groups(claims.get("cognito:groups"))) as admitted:
            try:
                check_body(event)
            except ClaudeError as exc:
                result: dict[str, Any] = {
                    "statusCode": exc.status,
                    "headers": {"Content-Type": content_types.APPLICATION_JSON, **error_headers(exc, rid)},
                    "body": json.dumps(error_body(exc, rid), separators=(",", ":")),
                    "isBase64Encoded": False,
                }
            else:
                result = idempotent(event, context, lambda: app.resolve(event, context))
        # The caller's request window as its admission left it, on successes and refusals alike.
        result["headers"] = {**(result.get("headers") or {}), **admitted.headers()}
        return with_standard_headers(result, rid)

    return handler


_idempotency: idempotency.Idempotency | None = None


def idempotent(event: dict[str, Any], context: LambdaContext, resolve: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A POST with an Idempotency-Key by an identified caller runs once; retries get its response."""
    global _idempotency
    rid = str((event.get("requestContext") or {}).get("requestId") or "")
    claims = ((event.get("requestContext") or {}).get("authorizer") or {}).get("claims") or {}
    if event.get("httpMethod") != "POST" or not claims.get("sub"):
        return resolve()
    try:
        key = idempotency.key_of(event.get("headers"))
        if key is None:
            return resolve()
        _idempotency = _idempotency or idempotency.Idempotency(get_settings().table_name)
        data = idempotency.request_data(str(claims["sub"]), "POST", str(event.get("path")), key, event.get("body"))
        result, replayed = _idempotency.run(data, resolve, context)
    except ClaudeError as exc:
        return {
            "statusCode": exc.status,
            "headers": {"Content-Type": content_types.APPLICATION_JSON, **error_headers(exc, rid)},
            "body": json.dumps(error_body(exc, rid), separators=(",", ":")),
            "isBase64Encoded": False,
        }
    if replayed:
        result.setdefault("headers", {})
        result["headers"] = {**(result["headers"] or {}), idempotency.REPLAYED: "true", "X-Request-Id": rid}
        result.get("multiValueHeaders", {}).pop("X-Request-Id", None)
    return result


def check_body(event: dict[str, Any]) -> None:
    """Refuse a malformed body before the router sees it, on every route (GETs included).

    Powertools would answer a body that is not UTF-8 or nests thousands of levels deep with a
    500; here every such body is the contract's 400. A base64 body (API Gateway sends one when
    it is not text) is decoded in place, so the router reads the same text we checked.
    """
    body = event.get("body")
    if not body:
        return
    raw: bytes | str = body
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(str(body), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedRequest() from None
    parse_json(raw)
    if isinstance(raw, bytes):
        event["body"], event["isBase64Encoded"] = raw.decode("utf-8"), False


# What a browser page may read of a response (CORS hides every other header from its script).
EXPOSED_HEADERS = (
    "X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Idempotent-Replayed"
)


def cors_headers() -> dict[str, str]:
    """Access-Control-* for the configured origin (CORS_ALLOW_ORIGIN), none when it is empty.
    API Gateway answers the preflight; every actual response needs these too."""
    try:
        origin = get_settings().cors_allow_origin
    except ClaudeError:  # misconfigured: the response says so; headers cannot help
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSED_HEADERS} if origin else {}


def with_standard_headers(result: dict[str, Any], rid: str) -> dict[str, Any]:
    """X-Request-Id on every response, and the JSON headers on every JSON one, whoever built it."""
    single: dict[str, Any] = dict(result.get("headers") or {})
    multi: dict[str, list[Any]] = result.get("multiValueHeaders") or {}
    names = {k.lower() for k in (*single, *multi)}
    content_type = next(
        (str(v) for k, v in single.items() if k.lower() == "content-type"),
        next((str(v[0]) for k, v in multi.items() if k.lower() == "content-type" and v), ""),
    )
    wanted = {
        "X-Request-Id": rid,
        **(JSON_HEADERS if content_type.startswith("application/json") else {}),
        **cors_headers(),
    }
    single.update({k: v for k, v in wanted.items() if k.lower() not in names})
    result["headers"] = single
    return result


def error_body(exc: ClaudeError, rid: str) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message, "request_id": rid}}


def error_headers(exc: ClaudeError, rid: str) -> dict[str, str]:
    headers = {"X-Request-Id": rid, **JSON_HEADERS}
    if exc.retry_after is not None and exc.status in (409, 429, 503, 504):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return headers


def _error(app: APIGatewayRestResolver, exc: ClaudeError) -> Response[str]:
    rid = request_id(app)
    return Response(
        status_code=exc.status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(error_body(exc, rid), separators=(",", ":")),
        headers=error_headers(exc, rid),
    )


def validation_error(errors: list[Any]) -> InvalidRequest:
    """A readable summary of what is wrong, without echoing the input back."""
    if any(err.get("type") == "json_invalid" for err in errors):
        return MalformedRequest()
    parts = []
    for err in errors[:5]:
        loc = ".".join(_location(p) for p in _fields(tuple(err.get("loc", ()))) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return InvalidRequest("; ".join(parts))


def _fields(loc: tuple[Any, ...]) -> list[Any]:
    """The path through the body's fields: pydantic also names the union branch it tried (a job
    item's task, a model or validator label), which means nothing to the caller."""
    return [
        part
        for i, part in enumerate(loc)
        if not (isinstance(part, str) and _BRANCH.fullmatch(part))
        and not (i and isinstance(loc[i - 1], int) and part in _JOB_TASKS)
    ]


def _location(part: object) -> str:
    """A field name or index as is; an unknown key the caller made up is not echoed back."""
    text = str(part)
    return text if _FIELD.fullmatch(text) else "<unknown key>"


def create_app() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response[str]:
        errors = list(exc.errors())
        if any(tuple(err.get("loc", ()))[:1] == ("response",) for err in errors):
            # Powertools reports a response that breaks its declared model this way: our bug, not the caller's.
            logger.error("response does not match its declared model", extra={"errors": len(errors)})
            return _error(app, ClaudeError())
        return _error(app, validation_error(errors))

    @app.exception_handler(ClaudeError)
    def _claude(exc: ClaudeError) -> Response[str]:
        return _error(app, exc)

    @app.not_found
    def _not_found(_: Exception) -> Response[str]:
        return _error(app, NotFound("no such route"))

    @app.exception_handler(Exception)
    def _bug(exc: Exception) -> Response[str]:
        logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
        return _error(app, ClaudeError())

    return app
