"""The contract's pieces the routes declare: the error envelope, the status of each error, the
headers that come with them, and the published document itself (GET /openapi.json).

`local.openapi` assembles the document from every function's routes; each route names its
success model (`Response[Model]`) and the error statuses it can return (`responses(...)`).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader
from pydantic import BaseModel

# Committed, and shipped in the layer so the deployed API can publish it (see README: The contract).
DOCUMENT = Path(__file__).with_name("openapi.json")


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorOut(BaseModel):
    """Every error: `{"error": {"code", "message", "request_id"}}`."""

    error: ErrorDetail


# What each status means, with the codes it carries (DESIGN.md's contract).
ERRORS: dict[int, str] = {
    400: "VALIDATION_ERROR: the body is not JSON, not UTF-8, too deep or too large",
    401: "UNAUTHORIZED: no authenticated caller",
    403: "FORBIDDEN: the caller is not in the group this route needs",
    404: "NOT_FOUND: no such resource (or not yours)",
    409: "CONFLICT: a request with the same Idempotency-Key is still running, or another message is being "
    "added to the same conversation: wait Retry-After seconds",
    413: "INPUT_TOO_LARGE: the input passes MAX_INPUT_CHARS",
    422: "VALIDATION_ERROR: the body does not match its schema; COST_EXCEEDS_BUDGET: the request alone costs more "
    "than the whole daily budget",
    429: "RATE_LIMITED, BUDGET_EXCEEDED or too many jobs in flight: wait Retry-After seconds",
    500: "INTERNAL_ERROR: a bug or a misconfiguration, never bad input",
    502: "UPSTREAM_ERROR or UPSTREAM_AUTH: Claude failed or answered something unusable",
    503: "UPSTREAM_UNAVAILABLE (Claude overloaded or unreachable, circuit open) or SERVICE_UNAVAILABLE (one of our "
    "dependencies): wait Retry-After seconds",
    504: "UPSTREAM_TIMEOUT: Claude did not answer within the request's deadline",
}
# The statuses a route that calls Claude can answer with, and one that only reads.
CLAUDE_ERRORS = (400, 401, 409, 413, 422, 429, 500, 502, 503, 504)
READ_ERRORS = (400, 401, 500)

_INT: dict[str, Any] = {"type": "integer"}
REQUEST_ID: dict[str, OpenAPIResponseHeader] = {
    "X-Request-Id": {"description": "This request's id, also in every error body", "schema": {"type": "string"}}
}
RETRY_AFTER: dict[str, OpenAPIResponseHeader] = {
    "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
}
RATE_LIMIT: dict[str, OpenAPIResponseHeader] = {
    "RateLimit-Limit": {"description": "Requests allowed per window", "schema": _INT},
    "RateLimit-Remaining": {"description": "Requests left in this window", "schema": _INT},
    "RateLimit-Reset": {"description": "Seconds until the window resets", "schema": _INT},
}


def responses(
    *errors: int, status: int = 200, description: str = "Success", limited: bool = False
) -> dict[int, OpenAPIResponse]:
    """A route's `responses`: its success (the handler's declared model) and the error envelope
    for each status in `errors`, with the headers that come with each."""
    success_headers = {**REQUEST_ID, **(RATE_LIMIT if limited else {})}
    declared: dict[int, OpenAPIResponse] = {status: {"description": description, "headers": success_headers}}
    for code in errors:
        waits = RETRY_AFTER if code in (409, 429, 503) else {}
        headers = {**REQUEST_ID, **waits, **(RATE_LIMIT if code == 429 else {})}
        declared[code] = {
            "description": ERRORS[code],
            "headers": headers,
            "content": {"application/json": {"model": ErrorOut}},
        }
    return declared


@cache
def document() -> dict[str, Any]:
    """The committed document, read once per container."""
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return loaded
