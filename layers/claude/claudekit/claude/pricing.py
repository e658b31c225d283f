"""Token usage and its cost, from the price rows generated out of `genai-prices` (prices.json).

The rows are generated at build time by `python -m local.prices` (docs/operations.md), so the
library's large data module never loads in Lambda. PRICING_JSON overrides whole rows per deploy,
in the same shape, validated at init.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from claudekit.errors import ConfigurationError

MILLION = Decimal(1_000_000)
# Far above any real request (1M-token context, 128k output): a larger count is a malformed reply.
MAX_REPORTED_TOKENS = 10_000_000


class Rates(BaseModel):
    """USD per million tokens for each line of the bill."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Decimal = Field(ge=0)
    cache_write_5m: Decimal = Field(ge=0)
    cache_write_1h: Decimal = Field(ge=0)
    cache_read: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)


class Tier(Rates):
    """Rates for every token of a request whose prompt (input + cache writes + reads) exceeds `above`."""

    above: int = Field(ge=0)


class Period(Rates):
    """The rates in force from `from` (a UTC date; None: from the beginning)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    since: date | None = Field(None, alias="from")
    tiers: tuple[Tier, ...] = ()

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        if [t.above for t in tiers] != sorted({t.above for t in tiers}):
            raise ValueError("tiers must have distinct thresholds in ascending order")
        return tiers

    def rates(self, prompt_tokens: int) -> Rates:
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above:
                return tier
        return self


class ModelPrices(BaseModel):
    """One model's row: its dated prices, the batch factor and the minimum cacheable prompt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_cache_tokens: int = Field(ge=0)
    batch_factor: Decimal = Field(ge=0, le=1)
    periods: tuple[Period, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _dated_in_order(self) -> ModelPrices:
        if self.periods[0].since is not None:
            raise ValueError('the first period must have "from": null')
        dates = [p.since for p in self.periods[1:]]
        if None in dates or dates != sorted({d for d in dates if d is not None}):
            raise ValueError("later periods need distinct dates in ascending order")
        return self

    def period(self, on: date) -> Period:
        """The price in force on `on`."""
        current = self.periods[0]
        for period in self.periods[1:]:
            if period.since is not None and period.since <= on:
                current = period
        return current

    def rates(self, on: date, prompt_tokens: int) -> Rates:
        return self.period(on).rates(prompt_tokens)

    def highest(self, on: date, prompt_tokens: int) -> Rates:
        """Each line's highest rate for any prompt up to `prompt_tokens` (the tier included if it
        could be crossed): what a reservation must assume."""
        period = self.period(on)
        reachable = [period, *(t for t in period.tiers if prompt_tokens > t.above)]
        return Rates(**{line: max(getattr(r, line) for r in reachable) for line in Rates.model_fields})


@dataclass
class Usage:
    """What one call consumed, as the API reports it. `cache_write_5m_tokens` / `_1h_` split the
    cache writes by TTL (usage.cache_creation); both zero with writes means the split is unknown."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """Read the SDK's usage object (or dict); missing fields count as zero.

        Raises ValueError for anything but non-negative integers within MAX_REPORTED_TOKENS (or a
        TTL split larger than the writes): a malformed upstream response, never a negative bill.
        """
        get = _getter(usage)
        creation = get("cache_creation")
        cget = _getter(creation) if creation is not None else (lambda _k: None)
        found = cls(
            input_tokens=_count(get("input_tokens")),
            output_tokens=_count(get("output_tokens")),
            cache_creation_input_tokens=_count(get("cache_creation_input_tokens")),
            cache_read_input_tokens=_count(get("cache_read_input_tokens")),
            cache_write_5m_tokens=_count(cget("ephemeral_5m_input_tokens")),
            cache_write_1h_tokens=_count(cget("ephemeral_1h_input_tokens")),
        )
        split = found.cache_write_5m_tokens + found.cache_write_1h_tokens
        if not found.cache_creation_input_tokens:
            found.cache_creation_input_tokens = split
        elif split > found.cache_creation_input_tokens:
            raise ValueError("usage splits more cache writes than it reports")
        return found

    @property
    def prompt_tokens(self) -> int:
        """What decides a long-prompt tier: input + cache writes + cache reads."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def public(self) -> dict[str, int]:
        """The four fields of the HTTP contract."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: v + getattr(other, k) for k, v in asdict(self).items()})


def _getter(obj: Any) -> Any:
    if isinstance(obj, dict):
        return obj.get
    return lambda key: getattr(obj, key, None)


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPORTED_TOKENS:
        raise ValueError("usage is not a plausible token count")
    return value


def utc_date(timestamp: float | None = None) -> date:
    """The UTC date of `timestamp` (now by default): the day whose prices apply."""
    return datetime.now(UTC).date() if timestamp is None else datetime.fromtimestamp(timestamp, UTC).date()


@lru_cache(maxsize=4)
def price_table(overrides_json: str | None = None) -> dict[str, ModelPrices]:
    """The shipped rows, with whole rows from PRICING_JSON (same shape) replacing or adding models."""
    raw: dict[str, Any] = json.loads(
        resources.files("claudekit.claude").joinpath("prices.json").read_text(), parse_float=Decimal
    )
    if overrides_json:
        try:
            overrides = json.loads(overrides_json, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"invalid configuration: PRICING_JSON ({exc.msg})") from None
        if not isinstance(overrides, dict):
            raise ConfigurationError("invalid configuration: PRICING_JSON (must be an object of model rows)")
        raw.update(overrides)
    table: dict[str, ModelPrices] = {}
    for model, row in raw.items():
        if model.startswith("_"):
            continue
        try:
            table[model] = ModelPrices.model_validate(row)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors()[:3])
            raise ConfigurationError(f"invalid configuration: PRICING_JSON ({model}: {problems})") from None
    return table


def cost_usd(usage: Usage, prices: ModelPrices, *, on: date, cache_ttl: str = "5m", batch: bool = False) -> Decimal:
    """Exact cost of `usage` at the prices in force `on`: the tier by the prompt's length, cache
    writes at their TTL's rate (all at `cache_ttl`'s when the API did not split them), reads at
    the read rate, and every line times the batch factor for Message Batches results."""
    rates = prices.rates(on, usage.prompt_tokens)
    writes = usage.cache_creation_input_tokens
    if usage.cache_write_5m_tokens or usage.cache_write_1h_tokens:
        writes_1h = usage.cache_write_1h_tokens
    else:
        writes_1h = writes if cache_ttl == "1h" else 0
    total = (
        usage.input_tokens * rates.input
        + (writes - writes_1h) * rates.cache_write_5m
        + writes_1h * rates.cache_write_1h
        + usage.cache_read_input_tokens * rates.cache_read
        + usage.output_tokens * rates.output
    ) / MILLION
    return total * prices.batch_factor if batch else total


def cost_without_caching(usage: Usage, prices: ModelPrices, *, on: date, batch: bool = False) -> Decimal:
    """What `usage` would have cost had every prompt token been plain input (no cache writes or reads)."""
    rates = prices.rates(on, usage.prompt_tokens)
    total = (usage.prompt_tokens * rates.input + usage.output_tokens * rates.output) / MILLION
    return total * prices.batch_factor if batch else total


def worst_case_usd(
    prices: ModelPrices,
    *,
    on: date,
    prompt_tokens: int,
    cacheable_tokens: int,
    output_tokens: int,
    batch: bool = False,
) -> Decimal:
    """An upper bound on a call's cost: at most `prompt_tokens` of prompt, of which the first
    `cacheable_tokens` may be written to cache at either TTL's rate, and `output_tokens` of output,
    all at the long-prompt tier's rates if the prompt could cross it."""
    rates = prices.highest(on, prompt_tokens)
    cacheable = min(cacheable_tokens, prompt_tokens)
    cached_rate = max(rates.input, rates.cache_write_5m, rates.cache_write_1h, rates.cache_read)
    total = (
        cacheable * cached_rate + (prompt_tokens - cacheable) * rates.input + output_tokens * rates.output
    ) / MILLION
    return total * prices.batch_factor if batch else total
