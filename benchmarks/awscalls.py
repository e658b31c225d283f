"""Count the AWS API calls this process makes, with botocore's own `before-call` / `after-call` events.

Used by `make bench` (calls per request by route, time spent in them) and by
tests/integration/test_aws_calls.py, which asserts the counts (counts may be asserted; timings never).

Every botocore client copies its session's event emitter when it is built, so a hook registered on a
session misses clients built earlier (the kit keeps its clients for the life of the container). While
an `AwsCalls` is open, the hook is therefore registered on every client that already exists and on
every client built meanwhile, whichever boto3 session (the default one, Powertools' own) built it.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import botocore.client
import botocore.session

_HOOK_ID = "benchmarks.awscalls"
_HOOKS = [
    ("before-parameter-build", "params"),
    ("before-call", "before"),
    ("after-call", "after"),
    ("after-call-error", "error"),
]
_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}


@dataclass(frozen=True)
class Call:
    """One AWS API call: `dynamodb.GetItem`, and for DynamoDB the kind of item (its key's prefix)."""

    service: str
    operation: str
    item: str | None
    started: float
    ended: float

    @property
    def name(self) -> str:
        return f"{self.service}.{self.operation}" + (f" [{self.item}]" if self.item else "")

    @property
    def is_breaker_read(self) -> bool:
        # The Powertools breaker keeps each circuit's state under its name, `claude:<model>`.
        return self.service == "dynamodb" and self.operation in _READS and self.item == "claude:"

    @property
    def is_refresh(self) -> bool:
        """A read made when a local cache expires (breaker state, model cooldown): how often one
        comes depends on the clock, not on the request, so it is counted apart from the hot path."""
        return self.service == "dynamodb" and self.operation in _READS and self.item in ("claude:", "cooldown#")


def item_kind(params: dict[str, Any]) -> str | None:
    """The prefix of the (first) partition key a DynamoDB request names: `ledger#`, `claude:`, ..."""
    keys: list[Any] = [params.get("Key"), params.get("Item")]
    for op in params.get("TransactItems", []):
        action: dict[str, Any] = next(iter(op.values()), {})
        keys += [action.get("Key"), action.get("Item")]
    for request in params.get("RequestItems", {}).values():  # BatchGetItem
        keys += request.get("Keys", [])
    for key in keys:
        value = (key or {}).get("id")
        if isinstance(value, dict):
            value = value.get("S")
        if isinstance(value, str):
            cut = min((i for i in (value.find("#"), value.find(":")) if i >= 0), default=len(value) - 1)
            return value[: cut + 1]
    return None


class AwsCalls:
    """While open, records every AWS call made by any botocore client of this process but the ignored ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._clients: list[Any] = []
        self._ignored: set[int] = set()
        self._original: Any = None

    # ---- what was counted ------------------------------------------------------------------

    def take(self) -> list[Call]:
        """The calls since the last take (completed calls only), and start afresh."""
        with self._lock:
            calls, self._calls = self._calls, []
        return calls

    @staticmethod
    def counts(calls: list[Call]) -> Counter[str]:
        return Counter(call.name for call in calls)

    def ignore(self, client: Any) -> Any:
        """Stop counting `client`'s calls (an event source's polling is the Lambda service's, not ours)."""
        self._ignored.add(id(client.meta.events))
        return client

    # ---- hooks -----------------------------------------------------------------------------

    def _watch(self, client: Any) -> None:
        events = client.meta.events

        def params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            # The call's own parameters (before serialisation): they name the DynamoDB item.
            context[f"{_HOOK_ID}.params"] = params

        def before(model: Any, context: dict[str, Any], **_: Any) -> None:
            if id(events) not in self._ignored:
                context[_HOOK_ID] = (time.perf_counter(), model)

        def after(context: dict[str, Any], **_: Any) -> None:
            # after-call on any answer (errors included), after-call-error when none came back.
            started, model = context.pop(_HOOK_ID, (None, None))
            if started is None:
                return
            service = model.service_model.endpoint_prefix
            item = item_kind(context.get(f"{_HOOK_ID}.params") or {}) if service == "dynamodb" else None
            call = Call(service, model.name, item, started, time.perf_counter())
            with self._lock:
                self._calls.append(call)

        for (event, suffix), handler in zip(_HOOKS, (params, before, after, after), strict=True):
            events.register(event, handler, unique_id=f"{_HOOK_ID}.{suffix}")
        self._clients.append(client)

    def __enter__(self) -> AwsCalls:
        original = self._original = botocore.session.Session.create_client
        watch = self._watch

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            watch(client)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign,assignment]
        for existing in _live_clients():
            self._watch(existing)
        return self

    def __exit__(self, *exc: object) -> None:
        botocore.session.Session.create_client = self._original  # type: ignore[method-assign]
        for client in self._clients:
            for event, suffix in _HOOKS:
                client.meta.events.unregister(event, unique_id=f"{_HOOK_ID}.{suffix}")
        self._clients.clear()


class SdkCpu:
    """CPU time spent inside the SDKs, per thread: botocore's `_make_api_call` (validation,
    serialisation, signing, the HTTP exchange, parsing, boto3's type (de)serialisers) and the Anthropic
    SDK's `SyncAPIClient.request` (building, sending and parsing its HTTP exchange, retries included).

    `time.thread_time()` deltas on the calling thread, so waiting on the network counts for nothing;
    what a request's CPU owes to the SDKs is subtracted from it to give ours (issue 15's target).
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._patched: list[tuple[Any, str, Any]] = []

    def take(self) -> dict[str, float]:
        """Seconds of this thread's CPU inside each SDK since the last take: {"aws": .., "anthropic": ..}."""
        spent: dict[str, float] = getattr(self._local, "spent", {})
        self._local.spent = {}
        return {"aws": spent.get("aws", 0.0), "anthropic": spent.get("anthropic", 0.0)}

    def _wrap(self, owner: Any, name: str, sdk: str) -> None:
        original = getattr(owner, name)
        local = self._local

        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(local, "inside", False):  # one SDK calling itself (retries): count once
                return original(*args, **kwargs)
            local.inside = True
            started = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                local.inside = False
                spent = local.__dict__.setdefault("spent", {})
                spent[sdk] = spent.get(sdk, 0.0) + time.thread_time() - started

        setattr(owner, name, timed)
        self._patched.append((owner, name, original))

    def __enter__(self) -> SdkCpu:
        from anthropic._base_client import SyncAPIClient

        self._wrap(botocore.client.BaseClient, "_make_api_call", "aws")
        self._wrap(SyncAPIClient, "request", "anthropic")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)
        self._patched.clear()


def _live_clients() -> Iterator[Any]:
    return (obj for obj in gc.get_objects() if isinstance(obj, botocore.client.BaseClient))


def busy_seconds(calls: list[Call]) -> float:
    """How long at least one of `calls` was in flight: the union of their intervals."""
    total, end = 0.0, float("-inf")
    for call in sorted(calls, key=lambda c: c.started):
        if call.started > end:
            total += call.ended - call.started
            end = call.ended
        elif call.ended > end:
            total += call.ended - end
            end = call.ended
    return total
