"""Health failures counted across the fleet, so a dead upstream opens the circuit after a few
attempts in total rather than a few per Lambda instance.

Powertools' breaker counts consecutive failures per execution environment (its healthy path stays
write-free). With many instances each seeing a failure or two, none of them alone would reach the
threshold soon. Here every health failure also adds one to a counter in the state table
(`breaker-count#<circuit>#<window>`, a fixed window); the attempt that brings it to the threshold
opens the circuit for everyone through the Powertools store. A success resets the counter only in
an instance that itself failed since its last success, so the healthy path still writes nothing.
Like the breaker itself, a table failure here fails open.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from claudekit.store.dynamo import ThreadTable
from claudekit.telemetry import logger


class FleetFailures:
    def __init__(self, table_name: str, *, window_seconds: float) -> None:
        self._window = window_seconds
        self._tables = ThreadTable(table_name)
        self._lock = threading.Lock()
        self._dirty: set[str] = set()  # circuits this instance failed on since its last success

    @property
    def _table(self) -> Any:
        return self._tables.get()

    def _key(self, circuit: str, now: float) -> dict[str, str]:
        return {"id": f"breaker-count#{circuit}#{int(now // self._window)}"}

    def failed(self, circuit: str) -> int:
        """Count one failure; the fleet's count in this window (0 if the table could not say)."""
        now = time.time()
        with self._lock:
            self._dirty.add(circuit)
        try:
            item = self._table.update_item(
                Key=self._key(circuit, now),
                UpdateExpression="ADD failures :one SET expiration = :expiration",
                ExpressionAttributeValues={":one": 1, ":expiration": int(now + 2 * self._window)},
                ReturnValues="UPDATED_NEW",
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("breaker count failed", extra={"error_type": type(exc).__name__})
            return 0
        return int(item.get("Attributes", {}).get("failures", 0))

    def succeeded(self, circuit: str) -> None:
        """A success ends the run of failures, if this instance contributed to it."""
        with self._lock:
            if circuit not in self._dirty:
                return
            self._dirty.discard(circuit)
        self.reset(circuit)

    def reset(self, circuit: str) -> None:
        try:
            self._table.delete_item(Key=self._key(circuit, time.time()))
        except (ClientError, BotoCoreError) as exc:
            logger.warning("breaker count reset failed", extra={"error_type": type(exc).__name__})
