"""Deadlines fit their caller: counted from when API Gateway received the request, within Lambda's
own remaining time, minus the margin needed to answer."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from claudekit.deadline import Deadline
from claudekit.http import lwa


@dataclass
class Context:
    seconds: float

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def test_time_before_the_function_ran_is_not_spent_twice() -> None:
    # API Gateway received it 10 s ago (a cold start); Lambda thinks it has 29 s.
    deadline = Deadline.for_request(Context(29), request_time_ms=(time.time() - 10) * 1000, budget=29, margin=1)
    assert 17 < deadline.remaining() <= 18


def test_lambdas_own_time_still_bounds_it() -> None:
    deadline = Deadline.for_request(Context(5), request_time_ms=time.time() * 1000, budget=29, margin=1)
    assert deadline.remaining() <= 4


def test_an_implausible_request_time_is_ignored() -> None:
    # A canned test event from 2015, or a clock ahead of ours: only Lambda's time counts.
    for epoch in (1428582896000, (time.time() + 60) * 1000):
        deadline = Deadline.for_request(Context(20), request_time_ms=epoch, budget=29, margin=1)
        assert 18 < deadline.remaining() <= 19


def test_the_stream_route_counts_its_budget_from_the_request() -> None:
    headers = {
        "x-amzn-request-context": json.dumps({"requestId": "r", "requestTimeEpoch": int((time.time() - 100) * 1000)}),
        "x-amzn-lambda-context": json.dumps({"deadline": int((time.time() + 119) * 1000)}),
    }
    call = lwa.invocation(headers, 0.5, 120.0)
    assert 19 < call.deadline.remaining() <= 19.5
