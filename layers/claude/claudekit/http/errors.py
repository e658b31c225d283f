"""The one map from an error to a response: status, `{"error": {...}}` body and headers.

REST routes (rest.py) and streaming routes (sse.py) both answer errors through `error_response`,
so a status, a `Retry-After` or a safe message cannot differ between them. Anything that is not a
ClaudeError is a bug: logged with its traceback, answered as a bare 500.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, get_args

from claudekit.errors import ClaudeError, InvalidRequest, MalformedRequest
from claudekit.http.headers import JSON_HEADERS
from claudekit.tasks.generate import GenerateTask
from claudekit.telemetry import logger

# The statuses where waiting helps, so the answer says how long (429 and 503 always carry one).
RETRY_AFTER_STATUSES = frozenset({409, 429, 503, 504})

# What a field name or list index of our contract looks like (anything else came from the caller).
_FIELD = re.compile(r"[A-Za-z0-9_]{1,64}")
# A union branch in a pydantic location: a model's name (no contract field is CamelCase) or a
# validator's label such as `function-after[check_text(), constrained-str]`.
_BRANCH = re.compile(r"[A-Z][A-Za-z0-9]*|[a-z-]+\[.*\]")
# A job item's tasks (tasks.jobs.models.JobTask), named here without importing the jobs models
# into every function: a test keeps the two equal.
_JOB_TASKS = frozenset(get_args(GenerateTask)) | {"classify", "ideas"}


@dataclass(frozen=True)
class ErrorResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    def json(self) -> str:
        return json.dumps(self.body, separators=(",", ":"))


def error_response(exc: BaseException, request_id: str) -> ErrorResponse:
    """What the caller is told about `exc`."""
    error = as_claude_error(exc, request_id)
    return ErrorResponse(error.status, error_body(error, request_id), error_headers(error, request_id))


def as_claude_error(exc: BaseException, request_id: str) -> ClaudeError:
    """`exc` as the contract names it. Anything but a ClaudeError is a bug: logged, reported as 500."""
    if isinstance(exc, ClaudeError):
        return exc
    logger.error(
        "unhandled error",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"error_type": type(exc).__name__, "request_id": request_id},
    )
    return ClaudeError()


def error_body(exc: ClaudeError, request_id: str) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message, "request_id": request_id}}


def error_headers(exc: ClaudeError, request_id: str) -> dict[str, str]:
    headers = {"X-Request-Id": request_id, **JSON_HEADERS}
    if exc.retry_after is not None and exc.status in RETRY_AFTER_STATUSES:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return headers


def validation_error(errors: list[Any]) -> InvalidRequest:
    """A readable summary of what is wrong with a body (pydantic's errors), without echoing the input."""
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
