"""Plans, RateLimit headers, per-feature usage and the operator report (issue 14).

The ledger runs against moto (atomic writes, as DynamoDB's) and the anthropic SDK against the
simulator; the REST handlers are invoked with API Gateway proxy events, as Lambda invokes them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from claudekit import errors
from claudekit.claude.client import ClaudeClient, get_client, reset_client
from claudekit.claude.pricing import Usage
from claudekit.claude.request import ClaudeRequest
from claudekit.deadline import Deadline
from claudekit.store import ledger
from claudekit.telemetry import hash_user
from local.instances import load_module
from local.lambda_context import LambdaContext
from local.shim import ROOT
from local.simulator import Simulator

PLANS = {
    "free": {"requests_per_minute": 5, "daily_budget_usd": 0.5},
    "pro": {"requests_per_minute": 50, "daily_budget_usd": 5},
}


def ask(client: ClaudeClient, user: str, groups: tuple[str, ...] = (), feature: str = "generate") -> str:
    request = ClaudeRequest(feature=feature, task="generate", user_id=user, prompt="Hi there", max_tokens=100)

    def run() -> str:
        try:
            client.complete(request, Deadline.after(20))
            return "ok"
        except errors.ClaudeError as exc:
            return exc.code

    return ledger.bind(ledger.Caller(frozenset(groups)), run)()


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# ---- plans, exact under concurrency ------------------------------------------------------------


def test_twelve_concurrent_free_requests_admit_exactly_the_plan_while_pro_is_unaffected(
    make_client: Any, sim: Simulator
) -> None:
    client: ClaudeClient = make_client(plans=PLANS, rate_limit_per_minute=1)
    free, pro = fresh("free"), fresh("pro")
    jobs: list[Callable[[], str]] = [lambda: ask(client, free, ("free",)) for _ in range(12)]
    jobs += [lambda: ask(client, pro, ("pro",)) for _ in range(12)]
    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(lambda job: job(), jobs))

    free_outcomes, pro_outcomes = outcomes[:12], outcomes[12:]
    assert free_outcomes.count("ok") == 5
    assert free_outcomes.count("RATE_LIMITED") == 7
    assert pro_outcomes == ["ok"] * 12
    assert len(sim.message_requests()) == 17
    with ledger.request(("free",)):
        report = client.ledger.report(free)
    assert report["plan"] == "free" and report["requests"] == 5
    assert report["limits"] == {"requests_per_minute": 5, "daily_budget_usd": 0.5}


def test_users_in_no_plan_group_get_the_default_plan_from_the_two_settings(make_client: Any, sim: Simulator) -> None:
    client: ClaudeClient = make_client(plans=PLANS, rate_limit_per_minute=2, daily_budget_usd=3)
    user = fresh("nobody")
    assert [ask(client, user, ("some-other-group",)) for _ in range(3)] == ["ok", "ok", "RATE_LIMITED"]
    report = client.ledger.report(user)
    assert report["plan"] == "default" and report["plan_overridden"] is False
    assert report["limits"] == {"requests_per_minute": 2, "daily_budget_usd": 3.0}


def test_a_user_in_several_plan_groups_gets_the_last_plan_listed(make_client: Any, sim: Simulator) -> None:
    client: ClaudeClient = make_client(plans=PLANS)
    with ledger.request(("pro", "free")):
        assert client.ledger.report(fresh("both"))["plan"] == "pro"


def test_a_per_user_override_item_replaces_the_plan_or_its_numbers(make_client: Any, sim: Simulator) -> None:
    client: ClaudeClient = make_client(plans=PLANS)
    upgraded, capped = fresh("upgraded"), fresh("capped")
    client.ledger.set_override(upgraded, plan="pro")
    client.ledger.set_override(capped, requests_per_minute=1)

    assert [ask(client, upgraded, ("free",)) for _ in range(6)] == ["ok"] * 6
    assert [ask(client, capped, ("free",)) for _ in range(2)] == ["ok", "RATE_LIMITED"]
    with ledger.request(("free",)):
        report = client.ledger.report(capped)
    assert report["plan"] == "free" and report["plan_overridden"] is True
    assert report["limits"] == {"requests_per_minute": 1, "daily_budget_usd": 0.5}
    with pytest.raises(ValueError, match="no plan"):
        client.ledger.set_override(capped, plan="platinum")


# ---- per feature and per day -------------------------------------------------------------------


def test_per_feature_sums_equal_the_per_call_costs(make_client: Any, sim: Simulator) -> None:
    client: ClaudeClient = make_client()
    user = fresh("features")
    results: dict[str, list[Any]] = {"generate": [], "summary": []}
    for feature, prompt in [("generate", "Hi"), ("summary", "Sum up: a"), ("generate", "Again"), ("summary", "b")]:
        request = ClaudeRequest(feature=feature, task="generate", user_id=user, prompt=prompt, max_tokens=200)
        results[feature].append(client.complete(request, Deadline.after(20)))

    report = client.ledger.report(user)
    for feature, calls in results.items():
        row = report["features"][feature]
        assert row["requests"] == len(calls)
        assert Decimal(str(row["cost_usd"])) == sum((r.cost_usd for r in calls), Decimal(0))
        for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            assert row["usage"][name] == sum(getattr(r.usage, name) for r in calls)
    every = [r for calls in results.values() for r in calls]
    assert Decimal(str(report["cost_usd"])) == sum((r.cost_usd for r in every), Decimal(0))
    assert report["usage"]["output_tokens"] == sum(r.usage.output_tokens for r in every)


def test_an_earlier_day_reports_that_day_and_todays_remaining_budget(make_client: Any, sim: Simulator) -> None:
    client: ClaudeClient = make_client(daily_budget_usd=1)
    user = fresh("yesterday")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    reservation = client.ledger.admit(user, Decimal("0.01"), now=yesterday.timestamp())
    client.ledger.settle(reservation, _usage(10, 20), _costs("0.004"), feature="generate", model="m")

    spent_today = client.ledger.admit(user, Decimal("0.25"))  # still reserved: counts against today

    past = client.ledger.report(user, day=yesterday.date())
    assert past["date"] == yesterday.date().isoformat() and past["cost_usd"] == 0.004
    assert past["features"]["generate"]["usage"]["output_tokens"] == 20
    assert past["remaining"]["budget_usd"] == 0.75  # what remains is always today's
    assert client.ledger.report(user)["requests"] == 0
    client.ledger.release(spent_today)


# ---- the operator report -----------------------------------------------------------------------


def test_operator_report_totals_per_feature_per_model_and_top_users(make_client: Any, sim: Simulator) -> None:
    client: ClaudeClient = make_client()
    day = datetime(2031, 3, 4, 12, tzinfo=UTC)  # a day no other test writes
    spenders = {fresh("big"): "0.3", fresh("mid"): "0.2", fresh("small"): "0.1"}
    for user, cost in spenders.items():
        reservation = client.ledger.admit(user, Decimal("0.5"), now=day.timestamp())
        client.ledger.settle(reservation, _usage(100, 10), _costs(cost), feature="generate", model="claude-sonnet-5-5")
    reservation = client.ledger.admit(next(iter(spenders)), Decimal("0.5"), now=day.timestamp())
    client.ledger.settle(reservation, _usage(5, 1), _costs("0.05"), feature="classify", model="claude-haiku-5-5")

    report = client.ledger.operator_report(day.date(), top=2)
    assert report["requests"] == 4 and report["cost_usd"] == pytest.approx(0.65)
    assert report["usage"]["input_tokens"] == 305
    assert report["features"]["generate"]["requests"] == 3
    assert report["features"]["classify"]["cost_usd"] == 0.05
    assert report["models"]["claude-haiku-5-5"]["usage"]["output_tokens"] == 1
    assert report["models"]["claude-sonnet-5-5"]["cost_usd"] == pytest.approx(0.6)
    big, mid, _ = spenders
    assert report["users"] == 3
    assert report["top_users"] == [
        {"user": hash_user(big), "cost_usd": 0.35},
        {"user": hash_user(mid), "cost_usd": 0.2},
    ]


# ---- over HTTP: RateLimit headers and the admin route -------------------------------------------


@pytest.fixture
def generate_app(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PLANS", json.dumps(PLANS))
    monkeypatch.setenv("ADMIN_GROUP", "ops")
    reset_client()
    return load_module(ROOT / "functions" / "generate" / "app.py", f"plans_generate_{uuid.uuid4().hex[:6]}")


def invoke(
    module: Any, event_file: str, user: str, groups: str | None = None, query: dict[str, str] | None = None
) -> Any:
    event = json.loads((ROOT / "events" / event_file).read_text())
    claims: dict[str, str] = {"sub": user}
    if groups is not None:
        claims["cognito:groups"] = groups
    event["requestContext"]["authorizer"] = {"claims": claims}
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    result = module.handler(event, LambdaContext("generate", 30))
    headers = {k: v[0] for k, v in (result.get("multiValueHeaders") or {}).items()} | (result.get("headers") or {})
    return result["statusCode"], json.loads(result["body"]), headers


def test_ratelimit_headers_on_success_and_on_refusal(generate_app: Any, sim: Simulator) -> None:
    user = fresh("headers")
    seen = [invoke(generate_app, "generate.json", user, "free") for _ in range(6)]

    for used, (status, _, headers) in enumerate(seen[:5], start=1):
        assert status == 200
        assert headers["RateLimit-Limit"] == "5"
        assert headers["RateLimit-Remaining"] == str(5 - used)
        assert 1 <= int(headers["RateLimit-Reset"]) <= 60
    status, body, headers = seen[5]
    assert status == 429 and body["error"]["code"] == "RATE_LIMITED"
    assert headers["RateLimit-Limit"] == "5" and headers["RateLimit-Remaining"] == "0"
    assert headers["Retry-After"] == headers["RateLimit-Reset"]


def test_budget_refusal_carries_the_window_it_did_not_use(generate_app: Any, sim: Simulator) -> None:
    user = fresh("broke")
    get_client().ledger.set_override(user, daily_budget_usd=0.0001)  # below one call's worst case
    status, body, headers = invoke(generate_app, "generate.json", user, "free")
    assert status == 422 and body["error"]["code"] == "COST_EXCEEDS_BUDGET"
    assert "RateLimit-Limit" not in headers  # never admitted: no window was touched


def test_usage_over_http_names_the_plan_and_takes_a_kept_date(generate_app: Any, sim: Simulator) -> None:
    user = fresh("reader")
    invoke(generate_app, "generate.json", user, "pro")
    status, body, _ = invoke(generate_app, "usage.json", user, "pro")
    assert status == 200 and body["plan"] == "pro" and body["features"]["generate"]["requests"] == 1

    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    status, body, _ = invoke(generate_app, "usage.json", user, "pro", {"date": yesterday})
    assert status == 200 and body["date"] == yesterday and body["requests"] == 0
    status, body, _ = invoke(generate_app, "usage.json", user, "pro", {"date": "2001-01-01"})
    assert status == 422 and body["error"]["code"] == "VALIDATION_ERROR"
    status, body, _ = invoke(generate_app, "usage.json", user, "pro", {"date": "yesterday"})
    assert status == 422


def test_admin_route_refuses_non_admins_and_reports_to_admins(generate_app: Any, sim: Simulator) -> None:
    spender = fresh("spender")
    invoke(generate_app, "generate.json", spender, "pro")
    event_file = "admin-usage.json"
    for groups in (None, "pro", "opsx,free", ""):
        status, body, _ = invoke(generate_app, event_file, fresh("nosy"), groups)
        assert status == 403 and body["error"]["code"] == "FORBIDDEN"

    status, body, _ = invoke(generate_app, event_file, fresh("operator"), "[pro ops]")
    assert status == 200
    assert body["date"] == datetime.now(UTC).date().isoformat()
    assert body["features"]["generate"]["requests"] >= 1
    assert body["users"] >= 1 and all(len(row["user"]) == 16 for row in body["top_users"])
    assert spender not in json.dumps(body)


def _usage(input_tokens: int, output_tokens: int) -> Usage:
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens)


def _costs(actual: str) -> ledger.Costs:
    return ledger.Costs(Decimal(actual), Decimal(actual), Decimal(actual))


def test_parse_groups_reads_every_shape_api_gateway_sends() -> None:
    assert ledger.parse_groups("admins,pro") == ["admins", "pro"]
    assert ledger.parse_groups("[admins pro]") == ["admins", "pro"]
    assert ledger.parse_groups(["admins"]) == ["admins"]
    assert ledger.parse_groups(None) == [] and ledger.parse_groups("") == []
