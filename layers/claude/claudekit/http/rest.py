"""Powertools glue shared by the REST functions: identity, deadline, responses, the Lambda entry.

Errors leave through errors.py's map (the same one the streaming routes use): `{"error": {"code",
"message", "request_id"}}` with the status the contract names, `Retry-After` where waiting helps,
and `X-Request-Id` always. Every JSON response is per user: `nosniff` and `no-store` on all of them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from claudekit.claude.client import get_client
from claudekit.deadline import Deadline
from claudekit.errors import ClaudeError, Forbidden, MalformedRequest, NotFound, Unauthorized
from claudekit.http import idempotency, openapi
from claudekit.http.body import parse_json
from claudekit.http.errors import error_response, validation_error
from claudekit.http.headers import JSON_HEADERS, cors_headers
from claudekit.settings import get_settings
from claudekit.store import ledger
from claudekit.telemetry import logger, traced

# The routes' OpenAPI `responses`: the success model and the error envelope of each status it can return.
responses = openapi.responses


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


def lambda_handler(app: APIGatewayRestResolver) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda entry point for a REST function: correlation id in logs, a trace, then the router.

    Called at import, so the settings are parsed and the client built in Lambda's init phase: a
    bad variable fails the cold start with its name, not the first request.
    """
    get_client()

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @traced
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
                result = proxy_error(exc, rid)
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
        return proxy_error(exc, rid)
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


def proxy_error(exc: ClaudeError, rid: str) -> dict[str, Any]:
    """An error as a Lambda proxy result, for refusals made before the router runs."""
    error = error_response(exc, rid)
    return {
        "statusCode": error.status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON, **error.headers},
        "body": error.json(),
        "isBase64Encoded": False,
    }


def _error(app: APIGatewayRestResolver, exc: BaseException) -> Response[str]:
    error = error_response(exc, request_id(app))
    return Response(
        status_code=error.status,
        content_type=content_types.APPLICATION_JSON,
        body=error.json(),
        headers=error.headers,
    )


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
        return _error(app, exc)  # logged there, with its traceback

    return app
