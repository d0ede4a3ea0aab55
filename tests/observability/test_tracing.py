"""OpenTelemetry: one WhatsApp message gives one trace, from the webhook request through the
queue hop to its turn, the upstream call, and the send of the reply (the SDK's in-memory
exporter stands in for a collector)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from parley.observability import tracing
from parley.testing import GraphSimulator
from tests.conftest import MakeParley
from tests.factories import body_bytes, signed_headers, whatsapp_texts

WAIT = 15.0


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(None, exporter=exporter)
    yield exporter
    tracing.stop_tracing()
    exporter.shutdown()


async def spans_named(
    exporter: InMemorySpanExporter, name: str, timeout: float = WAIT
) -> list[ReadableSpan]:
    """The finished spans called `name`, once there is one (spans end after their work)."""
    deadline = time.monotonic() + timeout
    while not (found := [s for s in exporter.get_finished_spans() if s.name == name]):
        assert time.monotonic() < deadline, f"no span {name!r}"
        await asyncio.sleep(0.02)
    return found


def ancestors(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> list[int]:
    chain = []
    while span.parent is not None:
        chain.append(span.parent.span_id)
        if span.parent.span_id not in spans:
            break
        span = spans[span.parent.span_id]
    return chain


async def test_one_message_is_one_trace(
    exporter: InMemorySpanExporter, make_parley: MakeParley, graph_sim: GraphSimulator
) -> None:
    parley = make_parley()  # built with tracing on
    body = body_bytes(whatsapp_texts("34614000001", ["trace me"]))
    # Meta sends no traceparent: the test's own client must not add one either.
    with suppress_http_instrumentation():
        response = await parley.client.post(
            "/webhooks/whatsapp", content=body, headers=signed_headers(body)
        )
    assert response.status_code == 200
    await graph_sim.wait_for_sends(1, timeout=WAIT)
    (turn,) = await spans_named(exporter, "parley.turn")
    sends = await spans_named(exporter, "parley.send")
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}

    (webhook,) = [
        s
        for s in spans.values()
        if s.kind == SpanKind.SERVER
        and "/webhooks/whatsapp"
        in str(s.attributes.get("url.path") or s.attributes.get("http.target"))
    ]
    trace_id = webhook.context.trace_id
    # The correlation id stored on the message is the webhook span's, and names it.
    correlation_id = response.headers["x-request-id"]
    assert correlation_id == f"{trace_id:032x}-{webhook.context.span_id:016x}"
    metas = await parley.rows("SELECT meta FROM messages WHERE direction='in'")
    assert correlation_id in str(metas)

    # Across the queue hop: the turn and the send are the webhook span's children.
    for span in (turn, *sends):
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == webhook.context.span_id
    assert [link.context.span_id for link in turn.links] == [webhook.context.span_id]

    def client_calls(path: str) -> list[ReadableSpan]:
        return [
            s
            for s in spans.values()
            if s.kind == SpanKind.CLIENT
            and path in str(s.attributes.get("url.full") or s.attributes.get("http.url"))
        ]

    # The upstream call is inside the turn; the Graph send inside the send.
    (upstream,) = client_calls("/v1/responses")
    assert turn.context.span_id in ancestors(upstream, spans)
    graph_sends = [
        s
        for s in client_calls("/messages")
        if any(send.context.span_id in ancestors(s, spans) for send in sends)
    ]
    assert graph_sends
    # And the SQL it ran, under the same trace; the background loops' polls are no traces.
    sql = [s for s in spans.values() if "db.system" in (s.attributes or {})]
    assert any(turn.context.span_id in ancestors(s, spans) for s in sql)
    assert all(s.parent is not None for s in sql)
    assert {s.context.trace_id for s in spans.values()} == {trace_id}


async def test_tracing_off_keeps_plain_ids(
    make_parley: MakeParley, graph_sim: GraphSimulator
) -> None:
    assert not tracing.enabled()
    parley = make_parley()
    body = body_bytes(whatsapp_texts("34614000002", ["no trace"]))
    response = await parley.client.post(
        "/webhooks/whatsapp", content=body, headers=signed_headers(body)
    )
    assert response.status_code == 200
    correlation_id = response.headers["x-request-id"]
    assert len(correlation_id) == 32 and int(correlation_id, 16) >= 0
    assert tracing.span_after("parley.turn", [correlation_id]) is tracing.span_after("x", [])
