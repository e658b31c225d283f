"""The circuit breaker's state in the state table, and health failures counted across the fleet.

`CircuitStore` is Powertools' DynamoDB persistence for the breaker (items `claude:<model>`), read
through Powertools' local cache, which is kept `cooldown.REFRESH_SECONDS`: while the circuit is
closed an instance reads the table at most that often, never per call. The read that refreshes it
fetches the model's cooldown in the same BatchGetItem, so the cooldown costs no round trip either.

`FleetFailures`: Powertools' breaker counts consecutive failures per execution environment (its
healthy path stays write-free). With many instances each seeing a failure or two, none of them alone
would reach the threshold soon. Here every health failure also adds one to a counter in the state
table (`breaker-count#<circuit>#<window>`, a fixed window); the attempt that brings it to the
threshold opens the circuit for everyone through the Powertools store. A success resets the counter
only in an instance that itself failed since its last success, so the healthy path still writes
nothing. Like the breaker itself, a table failure here fails open.
"""

from __future__ import annotations

import threading
import time

from aws_lambda_powertools.utilities.circuit_breaker.persistence import CircuitBreakerDynamoDBPersistence
from aws_lambda_powertools.utilities.circuit_breaker.persistence.record import CircuitStateRecord
from botocore.exceptions import BotoCoreError, ClientError

from claudekit.store.cooldown import Cooldowns, cooldown_id
from claudekit.store.dynamo import Table, client, from_ddb, key
from claudekit.telemetry import logger

# Circuits are named for the model they guard.
CIRCUIT_PREFIX = "claude:"


class CircuitStore(CircuitBreakerDynamoDBPersistence):
    """Powertools' breaker store on the kit's table handle, refreshing the model's cooldown with
    every read of the circuit's state."""

    def __init__(self, table_name: str, *, cooldowns: Cooldowns) -> None:
        self._cooldowns = cooldowns
        # The stores' shared client (a container builds one store; runtime.reset() drops both, so
        # the User-Agent hook Powertools adds per store never piles up).
        super().__init__(table_name=table_name, boto3_client=client())

    def _get_record(self, name: str) -> CircuitStateRecord | None:
        model = name.removeprefix(CIRCUIT_PREFIX) if name.startswith(CIRCUIT_PREFIX) else None
        if model is None:
            return super()._get_record(name)
        now = time.time()
        keys = [key(name), key(cooldown_id(model))]
        response = self.client.batch_get_item(RequestItems={self.table_name: {"Keys": keys}})
        if response.get("UnprocessedKeys"):  # raising makes Powertools fail open, uncached
            raise RuntimeError("circuit state not read")
        found = {item["id"]["S"]: item for item in response.get("Responses", {}).get(self.table_name, [])}
        cooldown = found.get(cooldown_id(model))
        self._cooldowns.learn(model, from_ddb(cooldown) if cooldown else None, now)
        item = found.get(name)
        return self._item_to_record(item) if item else None


class FleetFailures:
    def __init__(self, table_name: str, *, window_seconds: float) -> None:
        self._window = window_seconds
        self._table = Table(table_name)
        self._lock = threading.Lock()
        self._dirty: set[str] = set()  # circuits this instance failed on since its last success

    def _id(self, circuit: str, now: float) -> str:
        return f"breaker-count#{circuit}#{int(now // self._window)}"

    def failed(self, circuit: str) -> int:
        """Count one failure; the fleet's count in this window (0 if the table could not say)."""
        now = time.time()
        with self._lock:
            self._dirty.add(circuit)
        try:
            item = self._table.update(
                self._id(circuit, now),
                "ADD failures :one SET expiration = :expiration",
                values={":one": 1, ":expiration": int(now + 2 * self._window)},
                returns="UPDATED_NEW",
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning("breaker count failed", extra={"error_type": type(exc).__name__})
            return 0
        return int(item.get("failures", 0))

    def succeeded(self, circuit: str) -> None:
        """A success ends the run of failures, if this instance contributed to it."""
        with self._lock:
            if circuit not in self._dirty:
                return
            self._dirty.discard(circuit)
        self.reset(circuit)

    def reset(self, circuit: str) -> None:
        try:
            self._table.delete(self._id(circuit, time.time()))
        except (ClientError, BotoCoreError) as exc:
            logger.warning("breaker count reset failed", extra={"error_type": type(exc).__name__})
