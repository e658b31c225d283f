"""The Anthropic API key, read from Secrets Manager through Powertools and cached.

The secret holds either the bare key or JSON `{"api_key": "..."}`. The value is
cached for SECRET_MAX_AGE_SECONDS; after an upstream 401 the caller forces one
refresh, so rotating the key needs no redeploy.

Failures say what kind they are without naming the secret (its ARN holds the account id,
region and name): throttling or an outage of Secrets Manager is our dependency being
unavailable (503, retryable); anything else (missing, access denied, no key) is a
misconfiguration (500). Operators find the AWS error code in the log line.
"""

from __future__ import annotations

import json
import sys
import threading

from botocore.exceptions import BotoCoreError, ClientError

from claudekit.errors import ConfigurationError, DependencyUnavailable
from claudekit.telemetry import logger

# Powertools' parameters utility, imported by the first read (2 ms of init that routes reading no
# key, such as GET /usage, never need), or by `prepare` before a SnapStart snapshot.
_PARAMETERS = "aws_lambda_powertools.utilities.parameters"

# Secrets Manager error codes that mean "not now", not "never".
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalServiceError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


# One read per container, not per thread: the worker's threads start together on a cold container,
# and each would otherwise miss the cache and read the secret itself.
_READ = threading.Lock()


def prepare() -> None:
    """Import what reading the key needs, without reading it."""
    from aws_lambda_powertools.utilities import parameters  # noqa: F401


def get_api_key(secret_id: str, *, max_age: int, refresh: bool = False) -> str:
    from aws_lambda_powertools.utilities import parameters

    try:
        with _READ:
            raw = parameters.get_secret(secret_id, max_age=max_age, force_fetch=refresh)
    except parameters.exceptions.GetParameterError as exc:
        raise _failure(exc.__cause__ or exc.__context__) from None
    key = raw.strip() if isinstance(raw, str) else ""
    if key.startswith("{"):
        try:
            key = str(json.loads(key).get("api_key", "")).strip()
        except (json.JSONDecodeError, AttributeError):
            key = ""
    if not key:
        logger.critical("the API key secret holds no api_key (CLAUDE_SECRET_ID)")
        raise ConfigurationError()
    return key


def reset() -> None:
    """Forget the cached key and the Secrets Manager client (a SnapStart restore; tests)."""
    parameters = sys.modules.get(_PARAMETERS)
    if parameters is not None:  # never imported: nothing cached
        parameters.clear_caches()


def _failure(cause: BaseException | None) -> DependencyUnavailable | ConfigurationError:
    """What the caller sees for a failed read; the log line gets the AWS error code, never the id."""
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", ""))
        status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            logger.warning("Secrets Manager unavailable", extra={"aws_error_code": code})
            return DependencyUnavailable()
        logger.critical("the API key secret cannot be read (CLAUDE_SECRET_ID)", extra={"aws_error_code": code})
        return ConfigurationError()
    if isinstance(cause, BotoCoreError):  # could not connect, timed out, ...
        logger.warning("Secrets Manager unreachable", extra={"error_type": type(cause).__name__})
        return DependencyUnavailable()
    logger.critical("the API key secret cannot be read (CLAUDE_SECRET_ID)", extra={"error_type": type(cause).__name__})
    return ConfigurationError()
