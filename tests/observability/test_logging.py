"""The lines an operator follows a message by, with their fields, after a real message went
through; and JSON logs, one object a line, for structlog's lines and the standard library's."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO, cast

import pytest
import structlog
from structlog.testing import capture_logs

from parley.observability.logging import configure_logging, redact, reset_logging
from parley.testing import GraphSimulator
from tests.conftest import Parley
from tests.factories import PHONE_NUMBER_ID, body_bytes, signed_headers, whatsapp_texts

WAIT = 15.0


async def logged(logs: list[dict[str, Any]], name: str) -> None:
    """Wait (bounded) for a line: delivery logs its send just after recording it, so the line
    may come a moment after the row the test waited for."""
    deadline = time.monotonic() + WAIT
    # structlog's capture fills a plain list: there is no event to await, so it is polled.
    while not any(e["event"] == name for e in logs) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def one(logs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (entry,) = [entry for entry in logs if entry["event"] == name]
    return entry


async def answer_one(parley: Parley, graph_sim: GraphSimulator, phone: str) -> str:
    """Post one message, wait for its reply to be sent and recorded; its correlation id."""
    body = body_bytes(whatsapp_texts(phone, ["where is my order?"]))
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200
    await graph_sim.wait_for_sends(1, timeout=WAIT)
    await parley.wait_for_rows(
        "SELECT status FROM messages WHERE direction='out'", [("sent",)], timeout=WAIT
    )
    return response.headers["x-request-id"]


async def test_a_message_is_followed_by_its_lines(
    parley: Parley, graph_sim: GraphSimulator
) -> None:
    # The production chain's processors that decide the fields: contextvars, then redaction.
    with capture_logs(processors=[structlog.contextvars.merge_contextvars, redact]) as logs:
        correlation_id = await answer_one(parley, graph_sim, "34613000001")
        await logged(logs, "delivery.sent")
    ((inbound_id, conversation_id, account_id),) = await parley.rows(
        "SELECT channel_message_id, conversation_id, account_id FROM messages WHERE direction='in'"
    )
    ((outbound_id, model, input_tokens, output_tokens),) = await parley.rows(
        "SELECT channel_message_id, model, input_tokens, output_tokens FROM messages "
        "WHERE direction='out'"
    )

    accepted = one(logs, "webhook.accepted")
    assert {k: accepted[k] for k in accepted if k != "kind"} == {
        "event": "webhook.accepted",
        "log_level": "info",
        "channel": "whatsapp",
        "account_id": account_id,
        "account_external_id": PHONE_NUMBER_ID,
        "conversation_id": conversation_id,
        "channel_message_id": inbound_id,
        "correlation_id": correlation_id,
    }

    completed = one(logs, "turn.completed")
    assert completed["outcome"] == "answered"
    assert completed["conversation_id"] == conversation_id
    assert completed["correlation_id"] == correlation_id
    assert completed["account_id"] == account_id and completed["channel"] == "whatsapp"
    assert completed["model"] == model
    assert (completed["prompt"], completed["prompt_version"]) == ("builtin", None)
    # Token counts are numbers, not "[redacted]".
    assert (completed["input_tokens"], completed["output_tokens"]) == (
        input_tokens,
        output_tokens,
    )
    assert input_tokens > 0 and output_tokens > 0
    assert completed["cost_usd"] > 0
    assert completed["latency_ms"] >= completed["upstream_ms"] >= 0

    sent = one(logs, "delivery.sent")
    assert sent["correlation_id"] == correlation_id
    assert sent["channel"] == "whatsapp" and sent["account_id"] == account_id
    assert sent["channel_message_id"] == outbound_id
    assert sent["attempt"] == 1 and sent["latency_ms"] >= 0
    assert sent["conversation_id"] == conversation_id


class _Noting:
    """stderr as it is at each write (the test's capture), setting `sent` once delivery's
    line is written."""

    def __init__(self, sent: threading.Event) -> None:
        self._sent = sent

    def write(self, text: str) -> int:
        written = sys.stderr.write(text)
        if '"delivery.sent"' in text:
            self._sent.set()
        return written

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture
def json_logs() -> Iterator[None]:
    """PARLEY_LOG_FORMAT=json for the test (set in the test, once the app's uvicorn, which
    the CLI runs with `log_config=None` but the test server does not, has started)."""
    yield
    reset_logging()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h).__name__ == "_StderrHandler"]:
        root.removeHandler(handler)


async def test_json_logs_are_one_object_a_line(
    parley: Parley,
    json_logs: None,
    graph_sim: GraphSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    # Delivery logs its send just after recording it, on the app's thread: the stream it
    # writes to says when that line is out.
    sent = threading.Event()
    structlog.configure(
        logger_factory=lambda *_: structlog.PrintLogger(cast(TextIO, _Noting(sent)))
    )
    correlation_id = await answer_one(parley, graph_sim, "34613000002")
    assert await asyncio.to_thread(sent.wait, WAIT), "no delivery.sent line"
    # The standard library's loggers (uvicorn's, libraries') go through the same chain.
    logging.getLogger("uvicorn.error").warning("listening on %s", "port 8000")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert all(isinstance(line, dict) and "event" in line for line in lines)
    assert all("timestamp" in line and "level" in line for line in lines)
    by_event = {line["event"]: line for line in lines}
    assert by_event["turn.completed"]["correlation_id"] == correlation_id
    assert isinstance(by_event["turn.completed"]["input_tokens"], int)
    assert by_event["delivery.sent"]["correlation_id"] == correlation_id
    stdlib = by_event["listening on port 8000"]
    assert (stdlib["logger"], stdlib["level"]) == ("uvicorn.error", "warning")
