"""The template's side of accounting: the PRICING_JSON override and the unrecorded-usage alarm."""

from __future__ import annotations

from typing import Any


def test_pricing_json_is_a_parameter_every_function_gets(
    template: dict[str, Any], global_function: dict[str, Any]
) -> None:
    assert template["Parameters"]["PricingJson"]["Default"] == ""
    assert global_function["Environment"]["Variables"]["PRICING_JSON"] == {"Ref": "PricingJson"}


def test_unrecorded_usage_raises_an_alarm_at_the_first_occurrence(resources: dict[str, Any]) -> None:
    alarm = resources["UsageNotRecordedAlarm"]["Properties"]
    # The client emits UsageNotRecorded with an empty dimension set too, which this alarm reads.
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("ClaudeKit", "UsageNotRecorded", "Sum")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"
    assert "AlarmActions" in alarm
