"""Which messages were answered, and how often, as the customers saw it at the Graph simulator.

Each benchmark message carries a marker `mk<n>x`; the simulated model answers a turn by
repeating every user text it was given, so a turn that took several messages at once
(Parley coalesces a customer's burst) still answers each marker once. Counting markers in what
the Graph simulator accepted gives lost and duplicated answers per message.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from parley.testing import GraphSimulator, Recorded, SimTurn

MARK = re.compile(r"\bmk(\d+)x\b")


def marker_reply(turn: SimTurn) -> str:
    """The simulated model's answer: every user text of this turn, markers included."""
    return "Re: " + " | ".join(turn.user_texts)


class BenchGraph(GraphSimulator):
    """The Graph simulator, also keeping (recipient, message id) of each accepted send: the
    ids Meta's status webhooks (sent, delivered, read) name."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_ids: list[tuple[str, str]] = []
        self._ids_lock = threading.Lock()

    def _whatsapp(self, node: str, body: dict[str, Any], record: Recorded) -> dict[str, Any]:
        answer = super()._whatsapp(node, body, record)
        if record.kind == "message":
            with self._ids_lock:
                self.sent_ids.append((str(body.get("to")), answer["messages"][0]["id"]))
        return answer


@dataclass(frozen=True)
class Tally:
    answered: int  # distinct messages answered
    duplicated: int  # answers beyond the first, over all messages
    unmarked: int  # sends answering no benchmark message (fallbacks, notices)
    refused: int  # sends the Graph simulator refused


class AnswerBook:
    """Reads the Graph simulator's records incrementally (it holds tens of thousands)."""

    def __init__(self, graph: GraphSimulator, *, skip_existing: bool = False) -> None:
        """`skip_existing`: count only what is sent from now on (after a warm-up)."""
        self.graph = graph
        self.counts: Counter[int] = Counter()
        self.unmarked = 0
        self.refused = 0
        self._seen = len(graph.requests) if skip_existing else 0

    def refresh(self) -> Tally:
        records = self.graph.requests
        for record in records[self._seen :]:
            if record.status is None:
                break  # still being answered; read it next time, in order
            self._seen += 1
            if record.kind == "receipt":
                continue
            if record.status != 200:
                self.refused += 1
                continue
            markers = MARK.findall(_text(record.json))
            self.unmarked += not markers
            self.counts.update(int(m) for m in markers)
        return self.tally()

    def tally(self) -> Tally:
        duplicated = sum(n - 1 for n in self.counts.values() if n > 1)
        return Tally(len(self.counts), duplicated, self.unmarked, self.refused)

    def answered(self, numbers: range) -> int:
        return sum(1 for n in numbers if n in self.counts)

    async def wait(self, numbers: range | int, timeout: float, poll: float = 0.1) -> bool:
        """Until the messages `numbers` (or that many distinct ones) are answered; False if
        `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            tally = self.refresh()
            done = (
                tally.answered >= numbers
                if isinstance(numbers, int)
                else self.answered(numbers) == len(numbers)
            )
            if done:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)


def _text(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("text"), dict):
        return str(body["text"].get("body", ""))
    return ""
