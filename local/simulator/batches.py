"""Message Batches: create, retrieve, results (JSONL), cancel, list.

Every request of a batch is answered when the batch is created (same rules as ``/v1/messages``,
usage included, with ``service_tier: "batch"``); the batch reports ``ended`` once ``batch_delay``
seconds have passed on the simulator's clock (immediately by default).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from local.simulator.errors import ApiError, error_body


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class Batch:
    id: str
    created_at: datetime
    ready_at: float  # on the simulator clock
    results: list[dict[str, Any]]  # JSONL lines: {"custom_id", "result"}
    delay: float
    canceled_at: datetime | None = None
    ended: bool = False
    counts: dict[str, int] = field(default_factory=dict)


class BatchStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: dict[str, Batch] = {}

    def clear(self) -> None:
        with self._lock:
            self._batches.clear()

    def add(self, results: list[dict[str, Any]], delay: float) -> Batch:
        batch = Batch(
            id="msgbatch_sim_" + uuid.uuid4().hex[:24],
            created_at=datetime.now(UTC),
            ready_at=self._clock() + max(0.0, delay),
            results=results,
            delay=max(0.0, delay),
        )
        with self._lock:
            self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError("not_found_error", f"No batch found with id {batch_id!r}")
        return batch

    def _refresh(self, batch: Batch) -> None:
        if not batch.ended and self._clock() >= batch.ready_at:
            batch.ended = True

    def cancel(self, batch_id: str) -> Batch:
        batch = self.get(batch_id)
        with self._lock:
            self._refresh(batch)
            if not batch.ended:
                batch.canceled_at = datetime.now(UTC)
                batch.ended = True
                batch.results = [
                    {"custom_id": line["custom_id"], "result": {"type": "canceled"}} for line in batch.results
                ]
        return batch

    def describe(self, batch: Batch, base_url: str) -> dict[str, Any]:
        """The MessageBatch object."""
        with self._lock:
            self._refresh(batch)
            ended = batch.ended
            results = list(batch.results)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            for line in results:
                counts[line["result"]["type"]] += 1
        else:
            counts["processing"] = len(results)
        ended_at = batch.canceled_at or batch.created_at + timedelta(seconds=batch.delay)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.created_at + timedelta(hours=24)),
            "ended_at": _rfc3339(ended_at) if ended else None,
            "cancel_initiated_at": _rfc3339(batch.canceled_at) if batch.canceled_at else None,
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def results_jsonl(self, batch_id: str) -> bytes:
        batch = self.get(batch_id)
        with self._lock:
            self._refresh(batch)
            if not batch.ended:
                raise ApiError("invalid_request_error", f"Batch {batch_id} is still processing")
            lines = list(batch.results)
        return "".join(json.dumps(line) + "\n" for line in lines).encode()

    def listing(self, base_url: str) -> dict[str, Any]:
        with self._lock:
            batches = sorted(self._batches.values(), key=lambda b: b.created_at, reverse=True)
        data = [self.describe(batch, base_url) for batch in batches]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }


def errored(custom_id: str, error_type: str, message: str, error_code: str | None = None) -> dict[str, Any]:
    body = error_body(error_type, message, None, error_code)
    return {"custom_id": custom_id, "result": {"type": "errored", "error": body}}


def succeeded(custom_id: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def parse_create(body: Any) -> list[tuple[str, Any]]:
    """``[(custom_id, params)]`` from a create body; 400 for what the API rejects outright."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
        raise ApiError("invalid_request_error", "requests: at least one request is required")
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(body["requests"]):
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            raise ApiError("invalid_request_error", f"requests.{index}.custom_id: Field required")
        custom_id = item["custom_id"]
        if custom_id in seen:
            raise ApiError("invalid_request_error", f"requests.{index}.custom_id: duplicate {custom_id!r}")
        seen.add(custom_id)
        if not isinstance(item.get("params"), dict):
            raise ApiError("invalid_request_error", f"requests.{index}.params: Field required")
        out.append((custom_id, item["params"]))
    return out
