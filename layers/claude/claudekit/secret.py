"""The Anthropic API key, read from Secrets Manager through Powertools and cached.

The secret holds either the bare key or JSON `{"api_key": "..."}`. The value is
cached for SECRET_MAX_AGE_SECONDS; after an upstream 401 the caller forces one
refresh, so rotating the key needs no redeploy.
"""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities import parameters

from claudekit.errors import ConfigurationError


def get_api_key(secret_id: str, *, max_age: int, refresh: bool = False) -> str:
    try:
        raw = parameters.get_secret(secret_id, max_age=max_age, force_fetch=refresh)
    except parameters.exceptions.GetParameterError:
        # The cause names the secret id only; never the value.
        raise ConfigurationError(f"secret {secret_id!r} (CLAUDE_SECRET_ID) could not be read") from None
    key = raw.strip() if isinstance(raw, str) else ""
    if key.startswith("{"):
        try:
            key = str(json.loads(key).get("api_key", "")).strip()
        except (json.JSONDecodeError, AttributeError):
            key = ""
    if not key:
        raise ConfigurationError(f"secret {secret_id!r} (CLAUDE_SECRET_ID) holds no api_key")
    return key
