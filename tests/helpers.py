"""Helpers shared by the tests: wait for a condition, set the functions' environment, empty a queue."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from claudekit.settings import get_settings


def set_env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    """Set the functions' environment and make the next `get_settings()` read it."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> bool:
    """True once `predicate()` is; an AssertionError if it is still false after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    if predicate():
        return True
    raise AssertionError(f"condition not met within {timeout} s")


def drain(sqs: Any, url: str) -> None:
    """Empty a queue (PurgeQueue is allowed once a minute)."""
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
