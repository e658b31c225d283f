"""The kit's two handles on its one DynamoDB table, written once.

boto3 resources are not thread-safe, so a `Table` is kept per thread (batch records and stream
pumps run in threads); low-level clients are thread-safe, so one is shared. Both are built on
first use, not at import: nothing here costs the cold start.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3


class ThreadTable:
    """A DynamoDB `Table` resource for the calling thread."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._local = threading.local()

    def get(self) -> Any:
        table = getattr(self._local, "table", None)
        if table is None:
            table = self._local.table = boto3.resource("dynamodb").Table(self.table_name)
        return table


class SharedClient:
    """One low-level DynamoDB client for every thread."""

    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = boto3.client("dynamodb")  # type: ignore[call-overload]
            return self._client
