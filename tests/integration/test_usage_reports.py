"""GET /usage and GET /admin/usage's task: a day's report, only for days whose usage is still kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from claudekit.claude.client import get_client, reset_client
from claudekit.deadline import Deadline
from claudekit.errors import InvalidRequest
from claudekit.tasks import usage
from claudekit.tasks.generate import GenerateBody, generate_request
from local.simulator import Simulator


def test_a_callers_report_counts_what_it_spent_and_only_its_own(settings_env: dict[str, str], sim: Simulator) -> None:
    user = f"reports-{uuid.uuid4().hex[:8]}"
    spent = get_client().complete(generate_request(GenerateBody(prompt="hi"), user), Deadline.after(10))
    report = usage.report(user)
    assert report.date == datetime.now(UTC).date().isoformat()
    assert report.requests == 1
    assert report.cost_usd == pytest.approx(float(spent.cost_usd))
    assert usage.report("someone-else-" + user).requests == 0


def test_only_kept_days_can_be_asked_for(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGE_RETENTION_DAYS", "3")
    reset_client()
    today = datetime.now(UTC).date()
    oldest = today - timedelta(days=3)
    assert usage.report("anyone", oldest).date == oldest.isoformat()
    assert usage.operator_report().date == today.isoformat()
    for day in (today - timedelta(days=4), today + timedelta(days=1)):
        with pytest.raises(InvalidRequest) as refused:
            usage.report("anyone", day)
        assert refused.value.status == 422 and "3 days" in refused.value.message
        with pytest.raises(InvalidRequest):
            usage.operator_report(day)
