"""A thread-safe record of every request the simulator received, for tests to assert on."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

from local.simulator.faults import Fault


@dataclass
class RecordedRequest:
    """One request as the simulator saw it and how it was answered.

    ``status`` is None when no response was sent (hang, reset); ``disconnected`` is True when the
    client went away before the response was complete (detected while streaming).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    request_id: str
    fault: Fault | None = None
    status: int | None = None
    stream: bool = False
    disconnected: bool = False
    completed: bool = False
    duration: float | None = None
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "body": self.body,
            "time": self.time,
            "request_id": self.request_id,
            "fault": self.fault.to_dict() if self.fault else None,
            "status": self.status,
            "stream": self.stream,
            "disconnected": self.disconnected,
            "completed": self.completed,
            "duration": self.duration,
            "events": list(self.events),
        }


class RequestLog:
    """Append-only list of :class:`RecordedRequest`; readers get consistent copies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []

    def add(self, record: RecordedRequest) -> RecordedRequest:
        with self._lock:
            self._records.append(record)
        return record

    def update(self, record: RecordedRequest, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(record, name, value)

    def add_event(self, record: RecordedRequest, event: str) -> None:
        with self._lock:
            record.events.append(event)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return [dataclasses.replace(r, headers=dict(r.headers), events=list(r.events)) for r in self._records]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
