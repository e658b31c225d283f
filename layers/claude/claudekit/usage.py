"""Token usage and its cost, from one pricing table (pricing.json, overridable)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from claudekit.errors import ConfigurationError

MILLION = Decimal(1_000_000)


class Price(BaseModel):
    """USD per million tokens for one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_write_5m: Decimal = Field(ge=0)
    cache_write_1h: Decimal = Field(ge=0)
    cache_read: Decimal = Field(ge=0)
    batch_discount: Decimal = Field(Decimal("0.5"), ge=0, le=1)
    min_cache_tokens: int = Field(1024, ge=0)


@dataclass
class Usage:
    """What one call consumed. `cache_write_1h_tokens` is the 1-hour share of cache writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """Read the SDK's usage object (or dict); missing cache fields count as zero."""
        get = usage.get if isinstance(usage, dict) else lambda k, d=None: getattr(usage, k, d)
        creation = get("cache_creation", None)
        one_hour = 0
        if creation is not None:
            cget = creation.get if isinstance(creation, dict) else lambda k, d=None: getattr(creation, k, d)
            one_hour = int(cget("ephemeral_1h_input_tokens", 0) or 0)
        return cls(
            input_tokens=int(get("input_tokens", 0) or 0),
            output_tokens=int(get("output_tokens", 0) or 0),
            cache_creation_input_tokens=int(get("cache_creation_input_tokens", 0) or 0),
            cache_read_input_tokens=int(get("cache_read_input_tokens", 0) or 0),
            cache_write_1h_tokens=one_hour,
        )

    def public(self) -> dict[str, int]:
        """The four fields of the HTTP contract."""
        data = asdict(self)
        data.pop("cache_write_1h_tokens")
        return data

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


@lru_cache(maxsize=4)
def price_table(overrides_json: str | None = None) -> dict[str, Price]:
    """The shipped table, with per-deploy overrides (PRICING_JSON) merged over it."""
    raw: dict[str, Any] = json.loads(resources.files("claudekit").joinpath("pricing.json").read_text())
    if overrides_json:
        try:
            raw.update(json.loads(overrides_json))
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"invalid configuration: PRICING_JSON ({exc.msg})") from None
    try:
        return {model: Price(**row) for model, row in raw.items() if not model.startswith("_")}
    except ValueError as exc:
        raise ConfigurationError(f"invalid configuration: PRICING_JSON ({exc})") from None


def cost_usd(usage: Usage, price: Price, *, cache_ttl: str = "5m", batch: bool = False) -> Decimal:
    """Exact cost of `usage`: cache writes at their TTL's rate, cache reads at the read rate.

    When the API does not split cache writes by TTL, every write is billed at `cache_ttl`'s rate.
    """
    writes_1h = usage.cache_write_1h_tokens or (usage.cache_creation_input_tokens if cache_ttl == "1h" else 0)
    writes_5m = usage.cache_creation_input_tokens - writes_1h
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + writes_5m * price.cache_write_5m
        + writes_1h * price.cache_write_1h
        + usage.cache_read_input_tokens * price.cache_read
    ) / MILLION
    if batch:
        total *= 1 - price.batch_discount
    return total
