"""Generate the layer's price rows (claudekit/claude/prices.json) from the pinned `genai-prices` library.

`python -m local.prices` (or `make prices`) rewrites the file; `--check` only says whether it is
current. genai-prices is a dev dependency: its data module is large and slow to import, and it can
fetch price updates at run time, so Lambda never imports it; the layer ships only these rows.

A row, USD per million tokens (the same shape PRICING_JSON takes):

    "claude-haiku-5-5": {
      "min_cache_tokens": 2048,          # below it cache_control silently does nothing
      "batch_factor": 0.5,               # Message Batches API: every line times this
      "periods": [                       # the price in force from `from` (UTC date; null: always)
        {"from": null, "input": 0.1, "cache_write_5m": 0.125, "cache_write_1h": 0.2,
         "cache_read": 0.01, "output": 0.5,
         "tiers": [{"above": 100000, "input": 0.5, ...}]}  # prompt > above: every token at these
      ]
    }
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRICES_PATH = ROOT / "layers" / "claude" / "claudekit" / "claude" / "prices.json"

# The models the kit ships prices for, with their minimum cacheable prompt (not in genai-prices).
KIT_MODELS: dict[str, int] = {
    "claude-opus-5-5": 1024,
    "claude-sonnet-5-5": 1024,
    "claude-haiku-5-5": 2048,
    "claude-opus-4-5": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-haiku-4-5": 2048,
    "claude-opus-4-1": 1024,
}

# Our line name -> genai-prices' price key.
LINES: dict[str, str] = {
    "input": "input_mtok",
    "cache_write_5m": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "cache_read": "cache_read_mtok",
    "output": "output_mtok",
}

# Official price changes the pinned library does not model yet, each with its source. An amendment
# adds a period *before* the library's first one, equal to it except for the lines given. The
# generator refuses an amendment once the library has a dated change for that model itself: then
# drop the amendment (the check test fails until someone does).
AMENDMENTS: dict[str, dict[str, Any]] = {
    # https://platform.claude.com/docs/en/about-claude/pricing: Sonnet 5.5 cache reads were cut
    # from $0.20 to $0.10 per million on 2026-10-07; genai-prices 0.2.3 has only the new rate.
    "claude-sonnet-5-5": {"until": "2026-10-07", "cache_read": "0.20"},
}


def _num(value: Decimal) -> int | float:
    """A JSON number that reads back as exactly `value` (json.loads(parse_float=Decimal))."""
    if value == value.to_integral_value():
        return int(value)
    number = float(value)
    if Decimal(repr(number)) != value:
        raise ValueError(f"price {value} does not round-trip through JSON")
    return number


def _lines(price: Any) -> tuple[dict[str, Decimal], list[tuple[int, dict[str, Decimal]]]]:
    """Base rates and tiers [(above, rates)] of one genai-prices ModelPrice; all lines must share tiers."""
    from genai_prices.types import TieredPrices

    base: dict[str, Decimal] = {}
    tiers: dict[int, dict[str, Decimal]] = {}
    starts: set[tuple[int, ...]] = set()
    for ours, theirs in LINES.items():
        value = getattr(price, theirs)
        if value is None:
            raise ValueError(f"genai-prices has no {theirs}")
        if isinstance(value, TieredPrices):
            base[ours] = value.base
            starts.add(tuple(t.start for t in value.tiers))
            for tier in value.tiers:
                tiers.setdefault(tier.start, {})[ours] = tier.price
        else:
            base[ours] = value
            starts.add(())
    if len(starts) != 1:
        raise ValueError("lines with different tier thresholds are not supported")
    return base, sorted(tiers.items())


def _period(start: date | None, price: Any) -> dict[str, Any]:
    base, tiers = _lines(price)
    row: dict[str, Any] = {"from": start.isoformat() if start else None, **{k: _num(v) for k, v in base.items()}}
    if tiers:
        row["tiers"] = [{"above": above, **{k: _num(v) for k, v in rates.items()}} for above, rates in tiers]
    return row


def _batch_factor(model: str, info: Any, standard: Any) -> Decimal:
    """The library's batch variant as one factor on every line (it must be one). A model it lists
    without a batch price (not in Anthropic's batch price table) is billed in full: never under."""
    variants = [v for v in info.price_variants or () if v.when == {"processing": "batch"}]
    if not variants:
        return Decimal(1)
    if len(variants) != 1:
        raise ValueError(f"{model}: genai-prices has several batch price variants")
    batch_base, batch_tiers = _lines(_complete(variants[0].prices, standard))
    base, tiers = _lines(standard)
    factors = {batch_base[k] / base[k] for k in base if base[k]}
    for (above, rates), (batch_above, batch_rates) in zip(tiers, batch_tiers, strict=True):
        if above != batch_above:
            raise ValueError(f"{model}: batch tiers differ")
        factors |= {batch_rates[k] / rates[k] for k in rates if rates[k]}
    if len(factors) != 1:
        raise ValueError(f"{model}: the batch variant is not one factor on every line: {factors}")
    return factors.pop()


def _complete(partial: Any, standard: Any) -> Any:
    """A variant's partial ModelPrice with the standard lines it leaves out."""
    from copy import copy

    merged = copy(standard)
    merged.__dict__.update({k: v for k, v in partial.__dict__.items() if v is not None})
    return merged


def generate() -> dict[str, Any]:
    """The rows, as the pinned genai-prices (plus AMENDMENTS) says."""
    import genai_prices
    from genai_prices.data_snapshot import get_snapshot
    from genai_prices.types import StartDateConstraint

    snapshot = get_snapshot()
    rows: dict[str, Any] = {
        "_source": (
            f"genai-prices {genai_prices.__version__} (provider anthropic), generated by `make prices` "
            "(python -m local.prices): do not edit. USD per million tokens; see docs/operations.md."
        )
    }
    for model, min_cache in KIT_MODELS.items():
        _, info = snapshot.find_provider_model(model, None, "anthropic", None)
        prices = info.prices
        if info.id != model:
            raise ValueError(f"genai-prices matched {model} to {info.id}")
        dated = [(c.constraint, c.prices) for c in info.prices] if isinstance(info.prices, list) else [(None, prices)]
        periods: list[dict[str, Any]] = []
        for constraint, price in dated:
            if constraint is not None and not isinstance(constraint, StartDateConstraint):
                raise ValueError(f"{model}: only start-date price changes are supported")
            periods.append(_period(constraint.start_date if constraint else None, price))
        amendment = AMENDMENTS.get(model)
        if amendment:
            if len(periods) > 1:
                raise ValueError(f"{model}: genai-prices now has dated prices; drop its amendment in {__file__}")
            until = amendment["until"]
            earlier = {**periods[0], **{k: _num(Decimal(v)) for k, v in amendment.items() if k != "until"}}
            periods = [earlier, {**periods[0], "from": until}]
        rows[model] = {
            "min_cache_tokens": min_cache,
            "batch_factor": _num(_batch_factor(model, info, info.get_prices(datetime.now(UTC)))),
            "periods": periods,
        }
    return rows


def render(rows: Mapping[str, Any]) -> str:
    return json.dumps(rows, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the shipped rows are not current")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.check:
        current = PRICES_PATH.read_text() if PRICES_PATH.exists() else ""
        if current != text:
            print(f"{PRICES_PATH.relative_to(ROOT)} is stale: run `make prices`", file=sys.stderr)
            return 1
        return 0
    PRICES_PATH.write_text(text)
    print(f"wrote {PRICES_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
