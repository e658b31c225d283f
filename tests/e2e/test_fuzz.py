"""A bounded, seeded random-body fuzzer against every route of the local stack.

Hundreds of bodies per route, built from the route's valid body by mutation (hostile strings,
wrong types, huge numbers, deep nesting, unknown and missing fields) and from raw bytes (not
UTF-8, truncated JSON, garbage). Whatever arrives, the answer is never 5xx, and every error is
the documented envelope with its request id and the JSON headers. The seed is fixed, so a
failure reproduces; FUZZ_SEED and FUZZ_BODIES explore further.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.simulator import Simulator
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("FUZZ_SEED", "20261126"))
BODIES_PER_ROUTE = int(os.environ.get("FUZZ_BODIES", "300"))
CODES = {
    "VALIDATION_ERROR",
    "INPUT_TOO_LARGE",
    "RATE_LIMITED",
    "BUDGET_EXCEEDED",
    "UPSTREAM_ERROR",
    "UPSTREAM_UNAVAILABLE",
    "UPSTREAM_TIMEOUT",
    "NOT_FOUND",
}
VALID: dict[str, Any] = {
    "/generate": {"prompt": "Say hello.", "system": "Be brief.", "max_tokens": 50, "task": "summarize"},
    "/classify": {"text": "The parcel was late.", "labels": ["shipping", "billing"]},
    "/ideas": {"topic": "serverless cost control", "count": 2},
    "/stream": {"prompt": "Say hello.", "max_tokens": 20},
    "/jobs": {"items": [{"task": "summarize", "input": "Say hello."}], "mode": "realtime"},
    "/usage": None,
    "/jobs/{id}": None,
}
PIECES = [
    "hello",
    "",
    " ",
    "\t\n",
    "\r\n",
    "\x00",
    "\x1b[0m",
    "\x7f",
    "\x85",
    "\u2028",
    "\ufeff",
    "\ufffe\uffff",
    "\u202e",
    "e\u0301",
    "\U0001f680",
    "\U0001f9d1\u200d\U0001f4bb",
    "\ud800",
    "\udfff",
    "\ud83d",
    '"',
    "\\",
    "{}",
    "null",
    "a" * 600,
    "generate",
    "batch",
]


class Fuzzer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def string(self) -> str:
        return "".join(self.rng.choice(PIECES) for _ in range(self.rng.randint(0, 4)))

    def value(self, depth: int = 0) -> Any:
        kinds = ["str", "str", "int", "float", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
        kind = self.rng.choice(kinds)
        if kind == "str":
            return self.string()
        if kind == "int":
            return self.rng.choice([0, -1, 1, 2, 10, 51, 2**31, 2**63, 10**30, -(10**30)])
        if kind == "float":
            return self.rng.choice([0.5, 1.0, -0.0, 1e308, 3.0])
        if kind == "bool":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        if kind == "list":
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 60 if depth == 0 else 3))]
        return {self.string() or "k": self.value(depth + 1) for _ in range(self.rng.randint(0, 3))}

    def mutate(self, body: Any) -> Any:
        body = json.loads(json.dumps(body))
        for _ in range(self.rng.randint(1, 3)):
            paths = list(_paths(body))
            if not paths:
                return self.value()
            parent, key = self.rng.choice(paths)
            action = self.rng.random()
            if action < 0.6:
                parent[key] = self.value()
            elif action < 0.75 and isinstance(parent, dict):
                del parent[key]
            elif action < 0.9 and isinstance(parent, dict):
                parent[self.string() or "extra"] = self.value()
            else:
                parent[key] = self.string()
        return body

    def encode(self, body: Any) -> bytes:
        text = json.dumps(body, ensure_ascii=self.rng.random() < 0.7)
        # Without ensure_ascii a lone surrogate can only travel as bytes that are not UTF-8.
        return text.encode("utf-8", "surrogatepass")

    def raw(self, valid: Any) -> bytes:
        kind = self.rng.randrange(6)
        if kind == 0:
            return self.rng.randbytes(self.rng.randint(1, 200))
        if kind == 1:
            data = json.dumps(valid).encode()
            return data[: self.rng.randint(1, max(1, len(data) - 1))]
        if kind == 2:
            depth = self.rng.choice([17, 100, 1000, 5000, 20000])
            return b"[" * depth + b"]" * depth
        if kind == 3:
            return json.dumps(valid).encode().replace(b"S", b"\xc3\x28", 1) if valid else b"\xff"
        if kind == 4:
            return self.rng.choice([b"NaN", b"Infinity", b'{"prompt": -Infinity}', b"\xef\xbb\xbf{}", b" ", b"[]"])
        return self.rng.choice([b"0", b'"text"', b"true", b"null", b"1e400", b'{"a": 1, "a": 2}'])

    def body(self, valid: Any) -> bytes:
        choice = self.rng.random()
        if choice < 0.55 and valid is not None:
            return self.encode(self.mutate(valid))
        if choice < 0.65:
            return self.encode(self.value())
        if choice < 0.7 and valid is not None:
            return self.encode(valid)
        return self.raw(valid)


def _paths(node: Any) -> Any:
    """Every (container, key) in a JSON value, so any field at any depth can be changed."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield node, key
            yield from _paths(child)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield node, index
            yield from _paths(child)


def _send(conn: http.client.HTTPConnection, method: str, path: str, data: bytes, user: str) -> tuple[int, Any, bytes]:
    conn.request(method, path, body=data, headers={"content-type": "application/json", "X-User-Id": user})
    response = conn.getresponse()
    return response.status, response.headers, response.read()


@pytest.mark.parametrize("route", list(VALID))
def test_random_bodies_never_5xx_and_errors_keep_the_envelope(stack: StackClient, sim: Simulator, route: str) -> None:
    rng = random.Random(f"{SEED}:{route}")
    fuzz = Fuzzer(rng)
    user = f"fuzz-{uuid.uuid4().hex[:8]}"
    method = "GET" if VALID[route] is None else "POST"
    path = route.replace("{id}", str(uuid.uuid4()))
    parts = urlsplit(stack.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    jobs: list[str] = []
    statuses: dict[int, int] = {}
    try:
        for index in range(BODIES_PER_ROUTE):
            data = fuzz.body(VALID[route])
            status, headers, payload = _send(conn, method, path, data, user)
            statuses[status] = statuses.get(status, 0) + 1
            where = f"body #{index} (seed {SEED}) {data[:120]!r}"
            assert status < 500, f"{status} for {where}: {payload[:300]!r}"
            assert headers["x-request-id"], where
            if headers.get("content-type", "").startswith("text/event-stream"):
                continue
            assert headers["x-content-type-options"] == "nosniff", where
            assert headers["cache-control"] == "no-store", where
            body = json.loads(payload)
            if status >= 400:
                assert set(body) == {"error"}, where
                assert set(body["error"]) == {"code", "message", "request_id"}, where
                assert body["error"]["code"] in CODES, where
                assert body["error"]["request_id"] == headers["x-request-id"], where
            elif route == "/jobs":
                jobs.extend(job["id"] for job in body["jobs"])
    finally:
        conn.close()
    assert statuses.get(400, 0) + statuses.get(422, 0) > BODIES_PER_ROUTE // 3 or VALID[route] is None, statuses
    _wait_for_jobs(stack, jobs, user)


def _wait_for_jobs(stack: StackClient, job_ids: list[str], user: str) -> None:
    """Jobs the fuzzer managed to queue finish before the next test, which counts simulator calls."""
    end = time.monotonic() + 90
    pending = list(job_ids)
    while pending and time.monotonic() < end:
        reply = stack.call("GET", f"/jobs/{pending[0]}", user=user)
        if reply.body["status"] in ("succeeded", "failed"):
            pending.pop(0)
        else:
            time.sleep(0.5)
    assert not pending, f"jobs still in flight: {pending}"
