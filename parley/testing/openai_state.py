"""What the simulated upstream remembers: stored responses and conversations.

The server runs in another thread than the test that reads or resets this state, so every
access goes through `lock`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from parley.testing.openai_items import Item


@dataclass
class StoredResponse:
    body: dict[str, Any]
    input_items: list[Item]
    context: list[Item]  # what a response continuing this one sees as its history


@dataclass
class SimConversation:
    id: str
    created_at: int
    metadata: dict[str, str]
    items: list[Item] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


class SimState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.responses: dict[str, StoredResponse] = {}
        self.conversations: dict[str, SimConversation] = {}
        self.deleted: list[tuple[str, str]] = []
        """(``conversation`` or ``response``, id) of every object a client deleted, in order
        (not those a test made expire)."""

    def reset(self) -> None:
        with self.lock:
            self.responses = {}
            self.conversations = {}
            self.deleted = []

    def deleted_ids(self, kind: str) -> list[str]:
        with self.lock:
            return [object_id for k, object_id in self.deleted if k == kind]

    def forget_conversation(self, conversation_id: str) -> bool:
        with self.lock:
            return self.conversations.pop(conversation_id, None) is not None
