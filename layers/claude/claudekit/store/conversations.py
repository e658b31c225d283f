"""Conversation records in the state table, one item per conversation: `conversation#<uuid>`.

The item holds its owner (hashed), optional system prompt, a summary of compacted turns, the turns
themselves (JSON), a version for conditional writes, and `expiration` (the table's TTL), pushed
forward by every turn. Every write is conditional on the version read, so two turns racing on one
conversation cannot both land.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from claudekit.errors import Conflict, InputTooLarge, NotFound
from claudekit.settings import Settings
from claudekit.store.dynamo import Table, error_code
from claudekit.telemetry import hash_user


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Conversation:
    id: str
    owner: str  # hash_user of the owner's identity
    system: str | None = None
    summary: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)  # {"role", "content"}, alternating
    version: int = 0
    created_at: str = ""
    updated_at: str = ""
    expiration: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "system": self.system,
            "summary": self.summary,
            "messages": self.turns,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": iso(self.expiration),
        }


class ConversationStore:
    """Conversation items in the state table; every write is conditional on the version read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._table = Table(settings.table_name)

    def create(self, user_id: str, system: str | None) -> Conversation:
        # The system prompt stays in every turn: past half the cap, no history could ever fit.
        limit = self.settings.conversation_max_chars // 2
        if system is not None and len(system) > limit:
            raise InputTooLarge(f"system is {len(system)} characters; a conversation's may have at most {limit}")
        now = time.time()
        conv = Conversation(
            id=str(uuid.uuid4()),
            owner=hash_user(user_id),
            system=system,
            created_at=iso(now),
            updated_at=iso(now),
            expiration=int(now) + self.settings.conversation_ttl_seconds,
        )
        self._table.put(_item(conv), condition="attribute_not_exists(id)")
        return conv

    def get(self, conversation_id: str, user_id: str) -> Conversation:
        """The owner's live conversation; anyone else's, or an expired one, is NOT_FOUND."""
        found = self._table.get(_id(conversation_id), consistent=True)
        # TTL deletion lags by up to days: an expired item is gone to the caller already.
        if not found or found["owner"] != hash_user(user_id) or int(found["expiration"]) <= time.time():
            raise NotFound("no such conversation")
        return Conversation(
            id=conversation_id,
            owner=str(found["owner"]),
            system=found.get("system"),
            summary=found.get("summary"),
            turns=json.loads(str(found["turns"])),
            version=int(found["version"]),
            created_at=str(found["created_at"]),
            updated_at=str(found["updated_at"]),
            expiration=int(found["expiration"]),
        )

    def save_request(self, conv: Conversation) -> dict[str, Any]:
        """`conv` as its next version: the PutItem that writes it only over the version it was read
        at (also a transaction's `Put`). `conv` holds the next version afterwards."""
        now = time.time()
        previous = conv.version
        conv.version += 1
        conv.updated_at = iso(now)
        conv.expiration = int(now) + self.settings.conversation_ttl_seconds
        return self._table.put_request(_item(conv), condition="version = :v", values={":v": previous})

    def save(self, conv: Conversation) -> None:
        """Write the next version; Conflict if another turn was saved since `conv` was read."""
        request = self.save_request(conv)
        try:
            self._table.client.put_item(**request)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise Conflict(
                    "another message was added to this conversation at the same time", retry_after=1
                ) from None
            raise


def _id(conversation_id: str) -> str:
    return f"conversation#{conversation_id}"


def _item(conv: Conversation) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": _id(conv.id),
        "owner": conv.owner,
        "turns": json.dumps(conv.turns, ensure_ascii=False),
        "version": conv.version,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
        "expiration": conv.expiration,
    }
    if conv.system:
        item["system"] = conv.system
    if conv.summary:
        item["summary"] = conv.summary
    return item
