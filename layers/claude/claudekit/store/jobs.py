"""The job records in the state table (conditional status moves), and the AWS clients jobs use.

Each owner's jobs in flight (queued or running) are counted in one item, `inflight#<user>`, so
nobody fills the shared queue alone. The count is exact under concurrency: `create` adds a
submission's jobs with a conditional update (refused whole past the cap) in the transaction that
writes their records, and every move into
or out of flight changes the count in the same transaction as the job's status, so a job that
ends (succeeded, failed, failed on its way to the DLQ) always leaves the count, exactly once.

The worker claims a job with one conditional write that also checks the message against the
record (`claim`), and records the result in the same write that ends it (`succeeded_items`, which
rides in the call's settlement transaction; `to_succeeded` on its own): the job record is its own
idempotency record, so a job costs one write of its own (the claim), one shared, and no read.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from claudekit.settings import Settings
from claudekit.store.dynamo import TRANSACTION_ITEMS, Table, failed_conditions, from_ddb, to_ddb
from claudekit.tasks.jobs.models import now_iso
from claudekit.telemetry import hash_user, logger

# Attribute names that are reserved words in DynamoDB expressions.
_NAMES = {"#s": "status", "#r": "result", "#e": "error", "#m": "mode", "#o": "owner", "#t": "task", "#l": "lease_until"}


def job_key(job_id: str) -> dict[str, str]:
    return {"id": f"job#{job_id}"}


def in_flight_key(owner: str) -> dict[str, str]:
    return {"id": f"inflight#{hash_user(owner)}"}


# The statuses that count against the owner's cap.
IN_FLIGHT = ("queued", "running")
_IN_FLIGHT_VALUES = {":q_in": "queued", ":r_in": "running"}


# ---- the job records ----------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """What `JobStore.claim` found: `won` (this delivery runs the job now), else the record as it
    was (None: there is no such job), for the caller to tell a duplicate from a stranger."""

    won: bool
    record: dict[str, Any] | None = None


class JobStore:
    """Job records in the state table, keyed `job#<uuid>`. Every status change is conditional."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._table = Table(table_name)

    @property
    def client(self) -> Any:
        return self._table.client

    def create(self, records: list[dict[str, Any]], *, owner: str, cap: int) -> bool:
        """Count the jobs in flight for `owner` and write every record; False (nothing written)
        when that would put more than `cap` of the owner's jobs in flight.

        One transaction holds the count and the records, one round trip; DynamoDB allows 100
        items in one, so a full submission (100 records) counts first, and a failed write gives
        the count back.
        """
        if len(records) > cap:
            return False
        new = "attribute_not_exists(id)"
        puts = [{"Put": {"TableName": self.table_name, "Item": to_ddb(r), "ConditionExpression": new}} for r in records]
        if len(puts) < TRANSACTION_ITEMS:
            try:
                self.client.transact_write_items(
                    TransactItems=[{"Update": self._in_flight_update(owner, len(records), cap)}, *puts]
                )
            except ClientError as exc:
                if failed_conditions(exc)[:1] == [0]:  # the count's: past the cap
                    return False
                raise
            return True
        if not self._add_in_flight(owner, len(records), cap):
            return False
        try:
            self.client.transact_write_items(TransactItems=puts)
        except Exception:
            self._add_in_flight(owner, -len(records), None)
            raise
        return True

    def in_flight(self, owner: str) -> int:
        item = self.client.get_item(TableName=self.table_name, Key=to_ddb(in_flight_key(owner)), ConsistentRead=True)
        return int(from_ddb(item["Item"]).get("jobs", 0)) if "Item" in item else 0

    def _in_flight_update(self, owner: str, count: int, cap: int | None) -> dict[str, Any]:
        """One conditional ADD: never past `cap` (None: no cap, for giving jobs back)."""
        condition = {} if cap is None else {"ConditionExpression": "attribute_not_exists(jobs) OR jobs <= :room"}
        values = {":n": count, **({} if cap is None else {":room": cap - count})}
        return {
            "TableName": self.table_name,
            "Key": to_ddb(in_flight_key(owner)),
            "UpdateExpression": "ADD jobs :n",
            "ExpressionAttributeValues": to_ddb(values),
            **condition,
        }

    def _add_in_flight(self, owner: str, count: int, cap: int | None) -> bool:
        if cap is not None and count > cap:
            return False
        try:
            self.client.update_item(**self._in_flight_update(owner, count, cap))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get(self, job_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.table_name, Key=to_ddb(job_key(job_id)), ConsistentRead=True)
        return from_ddb(item["Item"]) if "Item" in item else None

    def _update_item(self, job_id: str, expression: str, condition: str, values: dict[str, Any]) -> dict[str, Any]:
        return {
            "TableName": self.table_name,
            "Key": to_ddb(job_key(job_id)),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {k: v for k, v in _NAMES.items() if k in f"{expression} {condition}"},
            "ExpressionAttributeValues": to_ddb({":now": now_iso(), **values}),
        }

    def _update(self, job_id: str, expression: str, condition: str, values: dict[str, Any]) -> bool:
        """One conditional update; False when the condition does not hold (someone got there first)."""
        try:
            self.client.update_item(**self._update_item(job_id, expression, condition, values))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _update_counted(
        self,
        job_id: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        *,
        leaving: bool,
        owner: str | None = None,
    ) -> bool:
        """The update plus the owner's in-flight count (-1 leaving flight, +1 entering), in one
        transaction that holds only if the job really crosses (from in flight when leaving, from
        failed when entering). False when the job is not there or has not that status.

        The owner is read from the record unless the caller knows it (then the job's condition
        checks it, so a wrong owner is never counted)."""
        if owner is None:
            record = self.get(job_id)
            if record is None or "owner" not in record:
                return False
            owner = str(record["owner"])
            known = False
        else:
            known = True
        try:
            self.client.transact_write_items(
                TransactItems=self._counted_items(
                    job_id, expression, condition, values, leaving=leaving, owner=owner, check_owner=known
                )
            )
        except ClientError as exc:
            if failed_conditions(exc):  # a conflict or a throttle is an error, not "not in flight"
                return False
            raise
        return True

    def _counted_items(
        self,
        job_id: str,
        expression: str,
        condition: str,
        values: dict[str, Any],
        *,
        leaving: bool,
        owner: str,
        check_owner: bool = True,
    ) -> list[dict[str, Any]]:
        """The TransactWriteItems entries of `_update_counted`: the job's update, conditional on
        its crossing (and on its owner, if `check_owner`), and the owner's in-flight count."""
        if check_owner:
            condition = f"({condition}) AND #o = :owner"
            values = {**values, ":owner": owner}
        crossing = "#s IN (:q_in, :r_in)" if leaving else "#s = :f_out"
        job = self._update_item(
            job_id,
            expression,
            f"({condition}) AND {crossing}",
            {**values, **(_IN_FLIGHT_VALUES if leaving else {":f_out": "failed"})},
        )
        job["ExpressionAttributeNames"]["#s"] = "status"
        return [{"Update": job}, {"Update": self._in_flight_update(owner, -1 if leaving else 1, None)}]

    def _finish(self, job_id: str, expression: str, condition: str, values: dict[str, Any], owner: str | None) -> bool:
        """A move to succeeded or failed: from queued or running it leaves flight (counted);
        from failed (a late result, a second failure) the count has already been given back."""
        return self._update_counted(job_id, expression, condition, values, leaving=True, owner=owner) or self._update(
            job_id, expression, f"({condition}) AND NOT #s IN (:q_in, :r_in)", {**values, **_IN_FLIGHT_VALUES}
        )

    def claim(
        self, job_id: str, message_id: str, *, owner: str, task: str, input_sha256: str, lease_until: float
    ) -> Claim:
        """queued | running past its lease (a crashed attempt) | failed by another delivery (a
        redrive) -> running, leased to this delivery until `lease_until` (epoch seconds: when its
        invocation ends). Never from succeeded, nor while another delivery holds the lease.

        One conditional write that also checks the message against the record (owner, task, input
        digest); only when it fails does the answer carry the record, to say why. A redriven job
        enters flight again, so that move is counted (a transaction, on that rare path only).
        """
        expression = (
            "SET #s = :running, updated_at = :now, started_at = :now, message_id = :mid, #l = :lease "
            "ADD attempts :one REMOVE failed_message_id"
        )
        matches = "#o = :owner AND #t = :task AND input_sha256 = :digest"
        values = {
            ":running": "running",
            ":mid": message_id,
            ":one": 1,
            ":lease": int(lease_until) + 1,
            ":owner": owner,
            ":task": task,
            ":digest": input_sha256,
        }
        free = "(#s = :q_in OR (#s = :r_in AND (attribute_not_exists(#l) OR #l < :clock)))"
        update = self._update_item(
            job_id,
            expression,
            f"{matches} AND {free}",
            {**values, **_IN_FLIGHT_VALUES, ":clock": int(time.time())},
        )
        try:
            self.client.update_item(**update, ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            old: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
            record = from_ddb(old) if old else None
        else:
            return Claim(True)
        if (
            record is not None
            and record.get("status") == "failed"
            and record.get("failed_message_id") != message_id
            and (record.get("owner"), record.get("task"), record.get("input_sha256")) == (owner, task, input_sha256)
            and self._update_counted(job_id, expression, matches, values, leaving=False, owner=owner)
        ):
            return Claim(True)
        return Claim(False, record)

    def to_succeeded(self, job_id: str, result: dict[str, Any], *, owner: str | None = None) -> bool:
        """-> succeeded with the result, in one write. A real result wins over any earlier state
        except another success. `owner` (when the caller knows it) saves reading the record."""
        return self._finish(job_id, *_succeeded(result), owner)

    def succeeded_items(self, job_id: str, result: dict[str, Any], *, owner: str) -> list[dict[str, Any]]:
        """`to_succeeded` from queued or running (the worker's case) as TransactWriteItems entries,
        to ride in another transaction (the call's settlement): no round trip of its own. If their
        condition fails (the job is no longer in flight), `to_succeeded` is the way."""
        return self._counted_items(job_id, *_succeeded(result), leaving=True, owner=owner)

    def to_failed(
        self,
        job_id: str,
        error: dict[str, str],
        *,
        message_id: str | None,
        only_from: str | None = None,
        owner: str | None = None,
    ) -> bool:
        """-> failed with the reason. `message_id` names the delivery now on its way to the DLQ."""
        condition = "attribute_exists(id) AND #s <> :ok"
        values: dict[str, Any] = {":failed": "failed", ":ok": "succeeded", ":error": error}
        if only_from is not None:
            condition += " AND #s = :from"
            values[":from"] = only_from
        expression = "SET #s = :failed, updated_at = :now, finished_at = :now, #e = :error REMOVE #l"
        if message_id is not None:
            expression = expression.replace(" REMOVE", ", failed_message_id = :mid REMOVE")
            values[":mid"] = message_id
        return self._finish(job_id, expression, condition, values, owner)

    def to_batch_running(self, job_ids: list[str], batch_id: str) -> bool:
        """queued -> running with the batch id, all in one transaction (False if any was not queued)."""
        now = now_iso()
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": to_ddb(job_key(job_id)),
                            "UpdateExpression": (
                                "SET #s = :running, updated_at = :now, started_at = :now, batch_id = :b"
                            ),
                            "ConditionExpression": "#s = :queued",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": to_ddb(
                                {":running": "running", ":queued": "queued", ":now": now, ":b": batch_id}
                            ),
                        }
                    }
                    for job_id in job_ids
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                return False
            raise
        return True

    def finish_batch_job(
        self, job_id: str, batch_id: str, *, result: dict[str, Any] | None = None, error: dict[str, str] | None = None
    ) -> bool:
        """A batch job's outcome: queued | running -> succeeded (result) or failed (error).

        True only for the one writer that moved it; whoever gets True settles the job's reservation.
        """
        values: dict[str, Any] = {":b": batch_id, ":batch": "batch"}
        finished = "updated_at = :now, finished_at = :now, batch_id = :b"
        if result is not None:
            expression = f"SET #s = :ok, #r = :result, {finished} REMOVE #e"
            values.update({":ok": "succeeded", ":result": json.dumps(result, separators=(",", ":"))})
        else:
            expression = f"SET #s = :failed, #e = :error, {finished}"
            values.update({":failed": "failed", ":error": error or {"code": "INTERNAL_ERROR", "message": ""}})
        return self._update_counted(job_id, expression, "#m = :batch", values, leaving=True)

    def to_queued(self, job_id: str, error: dict[str, str]) -> bool:
        """running -> queued after a transient failure (the lease given up, so the next delivery
        may claim it at once); the last error stays visible meanwhile."""
        return self._update(
            job_id,
            "SET #s = :queued, updated_at = :now, last_error = :error REMOVE #l",
            "#s = :running",
            {":queued": "queued", ":running": "running", ":error": error},
        )


def _succeeded(result: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The update, condition and values that move a job to succeeded with `result`."""
    return (
        "SET #s = :ok, updated_at = :now, finished_at = :now, #r = :result REMOVE #e, failed_message_id, #l",
        "attribute_exists(id) AND #s <> :ok",
        {":ok": "succeeded", ":result": json.dumps(result, separators=(",", ":"))},
    )


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """GET /jobs/{id}: id, task, status, and the result or the error."""
    view: dict[str, Any] = {"id": record["job_id"], "task": record["task"], "status": record["status"]}
    view["mode"] = record.get("mode", "realtime")
    if record["status"] == "succeeded" and "result" in record:
        result = json.loads(str(record["result"]))
        if "text" in result:  # a text result recorded before results took /generate's shape
            result.setdefault("request_id", None)
        view["result"] = result
    elif record["status"] == "failed" and "error" in record:
        error = record["error"]
        view["error"] = {"code": str(error.get("code", "INTERNAL_ERROR")), "message": str(error.get("message", ""))}
    view["created_at"] = record.get("created_at")
    view["updated_at"] = record.get("updated_at")
    return view


@dataclass(frozen=True)
class QueueInfo:
    """What the consumer needs to know about its queue, read once per container."""

    url: str
    max_receive_count: int | None


_queues: dict[str, QueueInfo] = {}
_queues_lock = threading.Lock()


def queue_info(url: str, sqs: Any) -> QueueInfo:
    """maxReceiveCount from the queue's RedrivePolicy (None: no DLQ, so nothing is ever the last receive).

    Read under a lock: the first invocations of a container arrive together, and one read serves all.
    A read that failed is not kept: the next invocation reads again."""
    with _queues_lock:
        info = _queues.get(url)
        if info is None:
            info, read = _read_queue_info(url, sqs)
            if read:
                _queues[url] = info
        return info


def _read_queue_info(url: str, sqs: Any) -> tuple[QueueInfo, bool]:
    """The queue's info, and whether it was read (False: SQS could not be asked)."""
    max_receive: int | None = None
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
        policy = attributes.get("RedrivePolicy")
        if policy:
            max_receive = int(json.loads(policy)["maxReceiveCount"])
    except (ClientError, BotoCoreError):
        logger.exception("could not read the queue's redrive policy")
        return QueueInfo(url, None), False
    except (KeyError, ValueError):
        logger.exception("could not read the queue's redrive policy")
    if max_receive is None:
        logger.error("jobs queue has no redrive policy: failed jobs cannot reach a dead-letter queue")
    return QueueInfo(url, max_receive), True


def reset_clients() -> None:
    """Forget cached stores and queue attributes (tests and the local stack change endpoints)."""
    _stores.clear()
    _queues.clear()


_stores: dict[str, JobStore] = {}


def store_for(settings: Settings) -> JobStore:
    store = _stores.get(settings.table_name)
    if store is None:
        store = _stores[settings.table_name] = JobStore(settings.table_name)
    return store
