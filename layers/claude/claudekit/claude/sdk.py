"""The Anthropic SDK client: one per container, rebuilt only when the API key changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import anthropic

from claudekit.claude import secret
from claudekit.errors import UpstreamAuth
from claudekit.settings import Settings
from claudekit.telemetry import logger

T = TypeVar("T")


class Sdk:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sdk: anthropic.Anthropic | None = None
        self._key: str | None = None
        self._lock = threading.Lock()

    def get(self, refresh: bool = False) -> anthropic.Anthropic:
        """The SDK client for the current key (`refresh`: read the secret again first).
        Its own retries are off: every retry decision lives in claude/retry.py."""
        s = self.settings
        key = secret.get_api_key(s.claude_secret_id, max_age=s.secret_max_age_seconds, refresh=refresh)
        with self._lock:
            if self._sdk is None or key != self._key:
                self._sdk = anthropic.Anthropic(
                    api_key=key, base_url=s.anthropic_base_url, max_retries=0, open_telemetry=False
                )
                self._key = key
            return self._sdk

    def refreshing_key(self, run: Callable[[], T]) -> T:
        """Run; on an upstream 401 the key may have been rotated: refresh it once and run once more."""
        try:
            return run()
        except UpstreamAuth:
            logger.error("upstream rejected our API key; refreshing the secret once")
            self.get(refresh=True)
            try:
                return run()
            except UpstreamAuth:
                logger.critical("upstream still rejects the API key: fix the secret")
                raise
