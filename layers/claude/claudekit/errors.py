"""The error hierarchy every adapter maps to HTTP, SSE or SQS outcomes.

Each error carries the public `code`, the HTTP `status`, whether another attempt
could succeed (`retryable`) and how long to wait first (`retry_after`). Messages
are safe to show to callers: never an upstream body, a prompt or the key.
"""

from __future__ import annotations


class ClaudeError(Exception):
    code = "INTERNAL_ERROR"
    status = 500
    retryable = False
    default_message = "internal error"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, retry_after={self.retry_after!r})"


class InternalError(ClaudeError):
    """A bug or a broken dependency on our side; never used for bad input."""


class ConfigurationError(InternalError):
    """The deployment is misconfigured (settings, secret). Fails loudly at init.

    `detail` (what `str()` shows: the cold-start log, tracebacks) names the variable at fault; the
    caller-facing `message` never carries it, nor any identifier of our resources.
    """

    default_message = "service is misconfigured"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__()
        self.detail = detail or self.default_message

    def __str__(self) -> str:
        return self.detail


class InvalidRequest(ClaudeError):
    code = "VALIDATION_ERROR"
    status = 422
    default_message = "request is invalid"


class MalformedRequest(InvalidRequest):
    """The body is not JSON at all."""

    status = 400
    default_message = "body is not valid JSON"


class Unauthorized(ClaudeError):
    """No authenticated identity reached the function.

    Deployed, the Cognito authorizer rejects such requests before Lambda runs, so this means the
    function was reached some other way (a misconfigured route, a direct invoke). We refuse rather
    than guess an identity: 401, as the authorizer itself would have answered.
    """

    code = "UNAUTHORIZED"
    status = 401
    default_message = "authentication required"


class Forbidden(ClaudeError):
    """An authenticated caller asked for what its groups do not allow (the operator report)."""

    code = "FORBIDDEN"
    status = 403
    default_message = "not allowed"


class NotFound(ClaudeError):
    code = "NOT_FOUND"
    status = 404
    default_message = "not found"


class Conflict(ClaudeError):
    """Another request on the same resource is still running; retrying shortly will work."""

    code = "CONFLICT"
    status = 409
    default_message = "another request on this resource is still running; retry shortly"


class InputTooLarge(ClaudeError):
    code = "INPUT_TOO_LARGE"
    status = 413
    default_message = "input is too large"


class RateLimited(ClaudeError):
    code = "RATE_LIMITED"
    status = 429
    default_message = "too many requests; retry later"


class BudgetExceeded(ClaudeError):
    code = "BUDGET_EXCEEDED"
    status = 429
    default_message = "daily budget exhausted"


class CostExceedsBudget(ClaudeError):
    """The request's worst-case cost alone exceeds the whole daily budget: waiting cannot help, only
    a smaller request (the message says what to lower for the route)."""

    code = "COST_EXCEEDS_BUDGET"
    status = 422
    default_message = "this request could cost more than the whole daily budget"


class UpstreamError(ClaudeError):
    """Claude answered with something we cannot use."""

    code = "UPSTREAM_ERROR"
    status = 502
    default_message = "the model service returned an error"


class UpstreamServerError(UpstreamError):
    """A 5xx (other than overload) or a malformed response: worth another attempt."""

    retryable = True


class UpstreamMalformed(UpstreamError):
    """A 200 whose body or usage is not what the API documents. Worth another attempt, but not a
    health failure: the service answered, so the breaker never counts it (a garbled reply must not
    pause the service for every user)."""

    retryable = True
    default_message = "the model service returned a malformed response"


class UpstreamRejected(UpstreamError):
    """Upstream refused the request as built (400/404/422): retrying cannot help."""


class StructuredOutputError(UpstreamError):
    default_message = "the model did not return valid structured output"


class UpstreamAuth(UpstreamError):
    """Upstream 401/403: our key is wrong or revoked. An operator must act."""

    code = "UPSTREAM_AUTH"
    default_message = "the model service rejected our credentials"


class UpstreamUnavailable(ClaudeError):
    """The model service cannot take the call now; waiting helps. Every instance says how long."""

    code = "UPSTREAM_UNAVAILABLE"
    status = 503
    retryable = True
    default_message = "the model service is unavailable; retry later"


class UpstreamOverloaded(UpstreamUnavailable):
    """529 / 503 / `overloaded_error`: the service is short of capacity (a health failure)."""


class UpstreamUnreachable(UpstreamUnavailable):
    """No connection to the service (refused, reset, DNS): a health failure of the network path.
    The fallback model lives behind the same endpoint, so it is not tried."""

    default_message = "could not reach the model service; retry later"


class UpstreamRateLimited(UpstreamUnavailable):
    """Upstream 429 `rate_limit_error`: our account's limit, not the service's health. It pauses
    the model for every instance (the shared cooldown) and never counts toward the breaker."""


class CircuitOpen(UpstreamUnavailable):
    """The breaker is open for this model: no call is made. Not retried inside the call (the
    fallback model may still serve); `retry_after` is the time until the circuit half-opens."""

    retryable = False
    default_message = "the model service is failing; requests are paused"


class SpendLimitReached(UpstreamUnavailable):
    """The organisation's spend limit (`billing_error`, 402, or a 429 whose `error_code` names a
    spend limit): retrying before an operator acts only burns time, so it is never retried in the
    call, never counted toward the breaker and never sent to the fallback model."""

    retryable = False
    default_message = "the model service is unavailable; an operator has been alerted"
    # No upstream hint comes with it; an hour is how often an operator-facing retry makes sense.
    default_retry_after = 3600.0

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=self.default_retry_after if retry_after is None else retry_after)


class DependencyUnavailable(ClaudeError):
    """One of our own dependencies (Secrets Manager) is throttling or down: retry later.
    Not the model service's health, so the breaker never sees it."""

    code = "SERVICE_UNAVAILABLE"
    status = 503
    retryable = True
    default_message = "the service is temporarily unavailable; retry later"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=1.0 if retry_after is None else retry_after)


class UpstreamTimeout(ClaudeError):
    code = "UPSTREAM_TIMEOUT"
    status = 504
    retryable = True
    default_message = "the model service did not answer in time"


# Failures that say something about upstream health; only these count toward the circuit breaker.
# Not upstream 429s (our account's limit), spend limits, 4xx, malformed replies (the service did
# answer), nor anything that failed on our side.
BREAKER_FAILURES: tuple[type[ClaudeError], ...] = (
    UpstreamServerError,
    UpstreamOverloaded,
    UpstreamUnreachable,
    UpstreamTimeout,
)

# Failures a queued job waits out (re-scheduled, not failed): the service or a dependency is
# unavailable for now. Everything else that escapes a job's call is permanent for that job.
TRANSIENT: tuple[type[ClaudeError], ...] = (
    UpstreamUnavailable,
    UpstreamServerError,
    UpstreamMalformed,
    UpstreamTimeout,
    DependencyUnavailable,
)
