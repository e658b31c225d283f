"""Settings of the simulator: which models exist, how fast it answers, how often it fails."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MODELS: frozenset[str] = frozenset(
    {
        "claude-opus-5-5",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        "claude-opus-4-5",
        "claude-opus-4-1",
        "claude-opus-4-0",
        "claude-sonnet-4-5",
        "claude-sonnet-4-0",
        "claude-haiku-4-5",
    }
)
"""Model IDs the simulator knows. Any other ``claude-*`` ID is accepted unless ``strict_models``."""

DEFAULT_MIN_CACHE_TOKENS: Mapping[str, int] = {"opus": 1024, "sonnet": 1024, "haiku": 2048}
"""Minimum cacheable prefix length by model family (a substring of the model ID)."""

FALLBACK_MIN_CACHE_TOKENS = 1024


@dataclass(frozen=True)
class Latency:
    """How long a reply takes: ``ttft`` seconds before the first token, then ``tokens_per_second``.

    ``tokens_per_second <= 0`` means output is produced instantly (the default, for fast tests).
    """

    ttft: float = 0.0
    tokens_per_second: float = 0.0

    def output_seconds(self, tokens: int) -> float:
        """Seconds needed to produce ``tokens`` output tokens after the first one arrives."""
        if self.tokens_per_second <= 0:
            return 0.0
        return tokens / self.tokens_per_second


@dataclass
class SimConfig:
    """Everything a test may change at run time (``Simulator.configure`` / ``POST /_sim/config``)."""

    latency: Latency = field(default_factory=Latency)
    api_key: str | None = None
    fail_rate: float = 0.0
    fail_status: int = 529
    seed: int = 0
    reply_tokens: int | None = None
    batch_delay: float = 0.0
    models: frozenset[str] = DEFAULT_MODELS
    strict_models: bool = False
    min_cache_tokens: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MIN_CACHE_TOKENS))

    def min_cacheable(self, model: str) -> int:
        """Minimum prefix length (tokens) for ``cache_control`` to take effect on ``model``."""
        for family, tokens in self.min_cache_tokens.items():
            if family in model:
                return tokens
        return FALLBACK_MIN_CACHE_TOKENS

    def model_exists(self, model: str) -> bool:
        if model in self.models:
            return True
        return not self.strict_models and model.startswith("claude-")

    def copy(self) -> SimConfig:
        return dataclasses.replace(self, min_cache_tokens=dict(self.min_cache_tokens))

    def to_dict(self) -> dict[str, Any]:
        """JSON view (the API key is reported only as set or not)."""
        return {
            "latency": {"ttft": self.latency.ttft, "tokens_per_second": self.latency.tokens_per_second},
            "api_key_required": self.api_key is not None,
            "fail_rate": self.fail_rate,
            "fail_status": self.fail_status,
            "seed": self.seed,
            "reply_tokens": self.reply_tokens,
            "batch_delay": self.batch_delay,
            "models": sorted(self.models),
            "strict_models": self.strict_models,
            "min_cache_tokens": dict(self.min_cache_tokens),
        }
