"""API error types, the HTTP status that belongs to each, and the error body shape."""

from __future__ import annotations

from typing import Any

ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_STATUS_TYPE: dict[int, str] = {status: type_ for type_, status in ERROR_STATUS.items()}

DEFAULT_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit. Please try again later.",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}


def error_type_for_status(status: int) -> str:
    """The API's error type for ``status`` (``api_error`` for an unlisted 5xx, else invalid request)."""
    if status in _STATUS_TYPE:
        return _STATUS_TYPE[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def status_for_error_type(error_type: str) -> int:
    return ERROR_STATUS.get(error_type, 500)


def error_body(
    error_type: str, message: str | None, request_id: str | None, error_code: str | None = None
) -> dict[str, Any]:
    """``{"type": "error", "error": {...}, "request_id": ...}`` as the API sends it; ``error_code``
    adds ``error.details.error_code`` (e.g. ``enforced_spend_limit_reached`` on a 429)."""
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type, "message": message or DEFAULT_MESSAGES.get(error_type, "Error")},
    }
    if error_code is not None:
        body["error"]["details"] = {"error_code": error_code}
    if request_id is not None:
        body["request_id"] = request_id
    return body


class ApiError(Exception):
    """Raised inside the simulator to answer with an API error."""

    def __init__(self, error_type: str, message: str, status: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.error_code = error_code
        self.status = status if status is not None else status_for_error_type(error_type)
