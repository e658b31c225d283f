"""Cost arithmetic pinned to figures computed by hand from the official table (issue 9), and the
shipped price rows checked against the pinned genai-prices.

USD per million tokens: input / 5m write / 1h write / read / output
  claude-opus-5-5     4 / 5 / 8 / 0.20 / 20
  claude-sonnet-5-5   2 / 2.50 / 4 / 0.10 (0.20 before 2026-10-07) / 10
  claude-haiku-5-5    0.10 / 0.125 / 0.20 / 0.01 / 0.50, prompt > 100k: 0.50 / 0.625 / 1 / 0.05 / 2.50
Message Batches: every line halved.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from claudekit.claude.pricing import Usage, cost_usd, cost_without_caching, price_table, worst_case_usd
from claudekit.errors import ConfigurationError
from local import prices as generator

TABLE = price_table()
AFTER_CUT = date(2026, 10, 7)  # Sonnet 5.5 cache reads $0.10 from this day
BEFORE_CUT = date(2026, 10, 6)
TODAY = date(2026, 11, 26)

# One usage with every line: 1,000 input, 2,000 5m writes, 1,000 1h writes, 4,000 reads, 500 output.
MIXED = Usage(
    input_tokens=1_000,
    output_tokens=500,
    cache_creation_input_tokens=3_000,
    cache_read_input_tokens=4_000,
    cache_write_5m_tokens=2_000,
    cache_write_1h_tokens=1_000,
)


def haiku_prompt(prompt_tokens: int) -> Usage:
    """Haiku usage whose prompt (input + writes + reads) is `prompt_tokens`, with the mixed cache lines."""
    return Usage(
        input_tokens=prompt_tokens - 7_000,
        output_tokens=500,
        cache_creation_input_tokens=3_000,
        cache_read_input_tokens=4_000,
        cache_write_5m_tokens=2_000,
        cache_write_1h_tokens=1_000,
    )


@pytest.mark.parametrize(
    ("model", "on", "expected"),
    [
        # 1000x4 + 2000x5 + 1000x8 + 4000x0.2 + 500x20 = 32,800 per million
        ("claude-opus-5-5", TODAY, "0.0328"),
        # 1000x2 + 2000x2.5 + 1000x4 + 4000x0.1 + 500x10 = 16,400
        ("claude-sonnet-5-5", AFTER_CUT, "0.0164"),
        # the same before the cut: reads 4000x0.2 = 800 instead of 400
        ("claude-sonnet-5-5", BEFORE_CUT, "0.0168"),
        # 1000x0.1 + 2000x0.125 + 1000x0.2 + 4000x0.01 + 500x0.5 = 840
        ("claude-haiku-5-5", TODAY, "0.00084"),
    ],
)
def test_each_row_with_mixed_5m_and_1h_writes(model: str, on: date, expected: str) -> None:
    assert cost_usd(MIXED, TABLE[model], on=on) == Decimal(expected)


def test_the_issue_example_generate_call() -> None:
    # 7 input and 34 output tokens on Sonnet 5.5: 7x2 + 34x10 = 354 per million (not 0.000531).
    assert cost_usd(Usage(input_tokens=7, output_tokens=34), TABLE["claude-sonnet-5-5"], on=TODAY) == Decimal(
        "0.000354"
    )


def test_haiku_prompt_of_exactly_100000_tokens_is_the_base_rate() -> None:
    # 93,000x0.1 + 2000x0.125 + 1000x0.2 + 4000x0.01 + 500x0.5 = 9300 + 250 + 200 + 40 + 250 = 10,040
    assert cost_usd(haiku_prompt(100_000), TABLE["claude-haiku-5-5"], on=TODAY) == Decimal("0.01004")


def test_haiku_prompt_of_100001_tokens_bills_every_token_at_five_times() -> None:
    # 93,001x0.5 + 2000x0.625 + 1000x1 + 4000x0.05 + 500x2.5 = 46,500.5 + 1250 + 1000 + 200 + 1250
    assert cost_usd(haiku_prompt(100_001), TABLE["claude-haiku-5-5"], on=TODAY) == Decimal("0.0502005")


def test_batch_results_are_half_of_every_line_tier_included() -> None:
    assert cost_usd(MIXED, TABLE["claude-sonnet-5-5"], on=TODAY, batch=True) == Decimal("0.0082")
    assert cost_usd(haiku_prompt(100_001), TABLE["claude-haiku-5-5"], on=TODAY, batch=True) == Decimal("0.02510025")


def test_writes_without_a_ttl_split_are_billed_at_the_configured_ttl() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=500, cache_creation_input_tokens=3_000)
    sonnet = TABLE["claude-sonnet-5-5"]
    # 2000 + 3000x2.5 + 5000 = 14,500; with 1h: 2000 + 3000x4 + 5000 = 19,000
    assert cost_usd(usage, sonnet, on=TODAY) == Decimal("0.0145")
    assert cost_usd(usage, sonnet, on=TODAY, cache_ttl="1h") == Decimal("0.019")


def test_cost_without_caching_bills_every_prompt_token_as_input() -> None:
    # 8000 prompt tokens x2 + 500x10 = 21,000 on Sonnet; the same call cached cost 16,400.
    assert cost_without_caching(MIXED, TABLE["claude-sonnet-5-5"], on=TODAY) == Decimal("0.021")


def test_worst_case_assumes_the_tier_when_the_prompt_could_cross_it() -> None:
    haiku = TABLE["claude-haiku-5-5"]
    # 100,000 prompt tokens of which 10,000 cacheable (1h write, 0.2) + 1,000 output (0.5):
    # 90,000x0.1 + 10,000x0.2 + 500 = 11,500
    below = worst_case_usd(haiku, on=TODAY, prompt_tokens=100_000, cacheable_tokens=10_000, output_tokens=1_000)
    assert below == Decimal("0.0115")
    # one more token could cross: 90,001x0.5 + 10,000x1 + 1,000x2.5 = 57,500.5
    above = worst_case_usd(haiku, on=TODAY, prompt_tokens=100_001, cacheable_tokens=10_000, output_tokens=1_000)
    assert above == Decimal("0.0575005")


def test_usage_from_api_reads_the_ttl_split_and_missing_fields() -> None:
    usage = Usage.from_api(
        {
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_creation_input_tokens": None,
            "cache_creation": {"ephemeral_1h_input_tokens": 3, "ephemeral_5m_input_tokens": 2},
        }
    )
    assert usage == Usage(
        input_tokens=5, output_tokens=7, cache_creation_input_tokens=5, cache_write_5m_tokens=2, cache_write_1h_tokens=3
    )
    assert usage.public() == {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 0,
    }


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 5, "output_tokens": -1},
        {"input_tokens": -5, "output_tokens": 1},
        {"input_tokens": 5, "output_tokens": 1.5},
        {"input_tokens": 5, "output_tokens": "7"},
        {"input_tokens": True, "output_tokens": 1},
        {"input_tokens": 5, "output_tokens": 10_000_001},
        {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": -3},
        {
            "input_tokens": 5,
            "output_tokens": 1,
            "cache_creation_input_tokens": 2,
            "cache_creation": {"ephemeral_1h_input_tokens": 9},
        },
    ],
)
def test_implausible_usage_is_refused(usage: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="usage"):
        Usage.from_api(usage)


# ---- the rows: generated from genai-prices, overridable, validated -------------------------------


def test_shipped_rows_equal_what_the_pinned_genai_prices_says() -> None:
    """Bumping genai-prices without `make prices` (or editing prices.json by hand) fails here."""
    assert generator.PRICES_PATH.read_text() == generator.render(generator.generate())


@pytest.mark.parametrize("model", ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-sonnet-4-5"])
@pytest.mark.parametrize("prompt", [8_000, 100_000, 100_001, 250_000])
@pytest.mark.parametrize("batch", [False, True])
def test_our_arithmetic_agrees_with_genai_prices(model: str, prompt: int, batch: bool) -> None:
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price

    usage = haiku_prompt(prompt)
    theirs = calc_price(
        GenaiUsage(
            input_tokens=usage.prompt_tokens,
            cache_write_tokens=usage.cache_creation_input_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            output_tokens=usage.output_tokens,
        ),
        model,
        provider_id="anthropic",
        genai_request_timestamp=datetime(2026, 11, 26, tzinfo=UTC),
        price_context={"processing": "batch"} if batch else None,
    ).total_price
    assert cost_usd(usage, TABLE[model], on=TODAY, batch=batch) == theirs


def test_the_layer_never_imports_genai_prices() -> None:
    code = "import sys, claudekit.claude.client; print('genai_prices' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=generator.ROOT / "layers/claude"
    )
    assert out.stdout.strip() == "False"


ROW = {
    "min_cache_tokens": 1024,
    "batch_factor": 0.5,
    "periods": [
        {"from": None, "input": 1, "cache_write_5m": 1.25, "cache_write_1h": 2, "cache_read": 0.1, "output": 3}
    ],
}


def test_pricing_json_replaces_whole_rows_in_the_shipped_shape() -> None:
    table = price_table(json.dumps({"claude-sonnet-5-5": ROW, "my-model": ROW}))
    assert cost_usd(Usage(input_tokens=1_000, output_tokens=1_000), table["claude-sonnet-5-5"], on=TODAY) == Decimal(
        "0.004"
    )
    assert "my-model" in table and "claude-opus-5-5" in table


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("{not json", "PRICING_JSON"),
        ("[1, 2]", "PRICING_JSON"),
        (json.dumps({"m": {**ROW, "periods": [{**ROW["periods"][0], "input": -1}]}}), "m: periods.0.input"),
        (json.dumps({"m": {**ROW, "batch_discount": 0.5}}), "m: batch_discount"),
        (json.dumps({"m": {k: v for k, v in ROW.items() if k != "periods"}}), "m: periods"),
        (json.dumps({"m": {**ROW, "periods": [{**ROW["periods"][0], "from": "2026-01-01"}]}}), "m: row"),
    ],
)
def test_bad_pricing_json_fails_at_init_naming_the_variable(override: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match="PRICING_JSON") as caught:
        price_table(override)
    assert named in str(caught.value)  # the detail is for init logs; callers see only "misconfigured"
