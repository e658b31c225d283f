"""Fault specs: construction, JSON round trip, queue semantics."""

from __future__ import annotations

import pytest

from local.simulator import Fault
from local.simulator.faults import FaultQueue

ALL = [
    Fault.status(429, retry_after=1),
    Fault.status(529),
    Fault.status(500, retry_after_ms=200, headers={"x-should-retry": "false"}),
    Fault.status(429, message="Your workspace has reached its spend limit", match="job-3"),
    Fault.hang(5),
    Fault.reset(),
    Fault.malformed(),
    Fault.truncate(after_deltas=2),
    Fault.stream_error(after_deltas=1, error_type="api_error", message="boom"),
]


@pytest.mark.parametrize("fault", ALL)
def test_json_round_trip(fault: Fault) -> None:
    assert Fault.from_dict(fault.to_dict()) == fault


def test_status_gets_its_error_type() -> None:
    assert Fault.status(529).error_type == "overloaded_error"
    assert Fault.status(413).error_type == "request_too_large"
    assert Fault.status(503).error_type == "api_error"
    assert Fault.status(429, error_type="billing_error").error_type == "billing_error"
    assert Fault.stream_error().status_code == 529


@pytest.mark.parametrize(
    "spec",
    [{}, {"kind": "nope"}, {"kind": "status"}, {"kind": "hang", "seconds": "5"}, {"kind": "reset", "extra": 1}],
)
def test_invalid_specs(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="fault"):
        Fault.from_dict(spec)


def test_queue_takes_first_applicable_fault() -> None:
    queue = FaultQueue()
    queue.extend([Fault.status(529, match="job-2"), Fault.status(500)])
    assert queue.take("job-1") == Fault.status(500)
    assert queue.take("job-1") is None
    assert queue.take("job-2 here") == Fault.status(529, match="job-2")


def test_matched_and_unmatched_only() -> None:
    queue = FaultQueue()
    queue.extend([Fault.status(529, match="a"), Fault.status(500)])
    assert queue.take("a", matched_only=True) == Fault.status(529, match="a")
    queue.extend([Fault.status(529, match="a")])
    assert queue.take("a", unmatched_only=True) == Fault.status(500)


def test_random_failures_only_without_scripted_faults() -> None:
    queue = FaultQueue()
    queue.set_random(1.0, 503, seed=1)
    queue.extend([Fault.reset()])
    assert queue.take("x") == Fault.reset()
    assert queue.take("x") == Fault.status(503)
    assert queue.take("x", matched_only=True) is None
