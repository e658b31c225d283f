"""Cost arithmetic pinned to hand-computed values (USD per million tokens from pricing.json)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from claudekit.errors import ConfigurationError
from claudekit.usage import Usage, cost_usd, price_table

SONNET = price_table()["claude-sonnet-5-5"]  # input 3, output 15, write 5m 3.75, write 1h 6, read 0.3


def test_plain_input_and_output() -> None:
    # 1000 x 3 + 500 x 15 = 10_500 per million
    assert cost_usd(Usage(input_tokens=1000, output_tokens=500), SONNET) == Decimal("0.0105")


def test_cache_writes_and_reads_at_their_own_rates() -> None:
    usage = Usage(input_tokens=1000, output_tokens=500, cache_creation_input_tokens=2000, cache_read_input_tokens=4000)
    # 3000 + 7500 + 2000 x 3.75 (7500) + 4000 x 0.3 (1200) = 19_200
    assert cost_usd(usage, SONNET) == Decimal("0.0192")


def test_one_hour_cache_writes_cost_twice_the_input_rate() -> None:
    usage = Usage(input_tokens=1000, output_tokens=500, cache_creation_input_tokens=2000, cache_read_input_tokens=4000)
    # 3000 + 7500 + 2000 x 6 (12_000) + 1200 = 23_700
    assert cost_usd(usage, SONNET, cache_ttl="1h") == Decimal("0.0237")


def test_split_of_cache_writes_by_ttl_from_the_api_wins() -> None:
    usage = Usage(
        input_tokens=1000,
        output_tokens=500,
        cache_creation_input_tokens=2000,
        cache_read_input_tokens=4000,
        cache_write_1h_tokens=500,
    )
    # 3000 + 7500 + 1500 x 3.75 (5625) + 500 x 6 (3000) + 1200 = 20_325
    assert cost_usd(usage, SONNET) == Decimal("0.020325")


def test_batch_is_half_price() -> None:
    usage = Usage(input_tokens=1000, output_tokens=500, cache_creation_input_tokens=2000, cache_read_input_tokens=4000)
    assert cost_usd(usage, SONNET, batch=True) == Decimal("0.0096")


def test_cache_multipliers_in_the_table_are_consistent() -> None:
    for model, price in price_table().items():
        assert price.cache_write_5m == price.input * Decimal("1.25"), model
        assert price.cache_write_1h == price.input * 2, model
        assert price.cache_read == price.input * Decimal("0.1"), model


def test_usage_from_api_reads_sdk_shapes_and_missing_fields() -> None:
    usage = Usage.from_api(
        {
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_creation_input_tokens": None,
            "cache_creation": {"ephemeral_1h_input_tokens": 3, "ephemeral_5m_input_tokens": 0},
        }
    )
    assert usage == Usage(input_tokens=5, output_tokens=7, cache_write_1h_tokens=3)
    assert usage.public() == {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_pricing_overrides_merge_and_bad_json_names_the_variable() -> None:
    table = price_table(
        '{"my-model": {"input": 1, "output": 2, "cache_write_5m": 1.25, "cache_write_1h": 2, "cache_read": 0.1}}'
    )
    assert table["my-model"].output == 2
    assert "claude-opus-5-5" in table
    with pytest.raises(ConfigurationError, match="PRICING_JSON"):
        price_table("{not json")
