"""Optional OpenTelemetry traces: webhook → turn → upstream call → send, and the SQL between.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and the `otel` extra is installed): the standard
instrumentations do the work (ASGI for every HTTP request, httpx for the upstream and Graph
calls, SQLAlchemy per engine), and Parley adds one span per turn and per send.

The queue hop carries no trace context of its own, so the trace rides on the correlation id,
which is stored on every message: while tracing, a webhook's new correlation id is its span's
trace id and span id (`<32 hex>-<16 hex>`, still a plain id in the logs). The turn that
answers the message, and the send of its reply, start as children of that webhook span (and
a turn that answers several messages links to each one's webhook).

Off, nothing of OpenTelemetry is imported, and the hot paths pay one boolean test: the door
takes a random id as before, and the turn and send spans are one shared null context.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import structlog

log = structlog.get_logger(__name__)

TRACED_ID = re.compile(r"^([0-9a-f]{32})-([0-9a-f]{16})$")
_NULL: AbstractContextManager[None] = contextlib.nullcontext()


class _State:
    enabled = False
    provider: Any = None


def enabled() -> bool:
    return _State.enabled


def configure_tracing(endpoint: str | None, *, exporter: Any = None) -> bool:
    """Turn tracing on for this process; returns whether it is on.

    Args:
        endpoint: the OTLP/HTTP collector (OTEL_EXPORTER_OTLP_ENDPOINT); None and no
            `exporter`: tracing stays off.
        exporter: a span exporter to use instead (tests pass the SDK's in-memory one); its
            spans are exported as each ends.
    """
    if endpoint is None and exporter is None:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.error("tracing.unavailable", reason="install the otel extra: pip install parley[otel]")
        return False
    if _State.provider is None:
        resource = Resource.create({"service.name": "parley"})
        _State.provider = TracerProvider(resource=resource, sampler=_sampler())
        trace.set_tracer_provider(_State.provider)
    if exporter is not None:
        _State.provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        _State.provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(endpoint)))
    for instrumentor in _http_instrumentors():
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=_State.provider)
    _State.enabled = True
    log.info("tracing.started", endpoint=endpoint)
    return True


def _sampler() -> Any:
    """Traces start at a request, a turn or a send, and everything inside them is kept. A
    client span with no parent is dropped: the SQL of the background loops' polls (the filer
    looks at the inbox ten times a second) would otherwise be a trace of its own each time."""
    from opentelemetry.sdk.trace.sampling import (
        Decision,
        ParentBased,
        Sampler,
        SamplingResult,
    )
    from opentelemetry.trace import SpanKind

    class NoLoneClientSpans(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind == SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)

        def get_description(self) -> str:
            return "NoLoneClientSpans"

    return ParentBased(root=NoLoneClientSpans())


def _otlp_exporter(endpoint: str | None) -> Any:
    """OTLP over HTTP to `endpoint` + `/v1/traces`, as the SDK reads the variable (it may
    come from `.env`, which the SDK does not read); OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, a
    full URL, wins as in the SDK. Headers, timeout and compression: the SDK's OTEL_* ones."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if endpoint is None or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return OTLPSpanExporter()
    return OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")


def stop_tracing() -> None:
    """Tracing off again (tests): spans end, httpx is no longer wrapped."""
    if not _State.enabled:
        return
    for instrumentor in _http_instrumentors():
        instrumentor.uninstrument()
    _State.provider.force_flush()
    _State.enabled = False


def instrument_http_client(client: Any) -> None:
    """Client spans for the calls of `client` (an httpx or httpx2 client) while tracing is
    on. Parley's clients run on aiohttp's transport, which the instrumentors' own patch of
    httpx's default transport does not reach, so each client is instrumented where it is
    made; a client made while tracing is off stays as it is."""
    if not _State.enabled:
        return
    import httpx
    from opentelemetry.instrumentation import httpx as instrumentation

    instrumentor = (
        instrumentation.HTTPXClientInstrumentor
        if isinstance(client, httpx.AsyncClient)
        else getattr(instrumentation, "HTTPX2ClientInstrumentor", None)
    )
    if instrumentor is not None:
        instrumentor.instrument_client(client, tracer_provider=_State.provider)


def _http_instrumentors() -> list[Any]:
    """httpx's instrumentor (Graph sends, media, tools), and httpx2's where it is installed:
    newer openai SDKs make their upstream calls with httpx2."""
    from opentelemetry.instrumentation import httpx as instrumentation

    found: list[Any] = [instrumentation.HTTPXClientInstrumentor()]
    second = getattr(instrumentation, "HTTPX2ClientInstrumentor", None)
    if second is not None and importlib.util.find_spec("httpx2") is not None:
        found.append(second())
    return found


def trace_requests(app: Any) -> Any:
    """`app` (an ASGI app) with a server span per HTTP request (OpenTelemetry's ASGI
    middleware, outermost, ahead of the webhook door; a caller's `traceparent` is honoured),
    or `app` itself when tracing is off."""
    if not _State.enabled:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        app, excluded_urls="healthz,readyz,metrics", tracer_provider=_State.provider
    )


def instrument_engine(engine: Any) -> None:
    """A span per SQL statement on `engine` (an `AsyncEngine`), when tracing is on."""
    if not _State.enabled:
        return
    from opentelemetry import metrics, trace
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    # What SQLAlchemyInstrumentor().instrument(engine=…) does, for every engine of the
    # process: the instrumentor itself instruments only once per process.
    tracer = trace.get_tracer("parley.store", tracer_provider=_State.provider)
    usage = metrics.get_meter("parley.store").create_up_down_counter(
        "db.client.connections.usage", unit="connections"
    )
    EngineTracer(tracer, engine.sync_engine, usage)


def correlation_id_factory() -> Callable[[], str]:
    """What makes a request's correlation id when the caller sent none: a random id, or, while
    tracing, the current span's `<trace id>-<span id>`."""
    return _traced_id if _State.enabled else _random_id


def _random_id() -> str:
    # 128 random bits as 32 hex digits, like `uuid4().hex` for a fraction of its cost (no
    # system call, no UUID object) on every webhook: a correlation id is no secret.
    return f"{random.getrandbits(128):032x}"


def _traced_id() -> str:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return uuid.uuid4().hex
    return f"{context.trace_id:032x}-{context.span_id:016x}"


def span_after(
    name: str, correlation_ids: Sequence[object], **attributes: Any
) -> AbstractContextManager[Any]:
    """A span for work that answers stored messages (a turn, a send): the child of the
    webhook span named by the last correlation id, linked to every one's. Off: a null
    context, shared."""
    if not _State.enabled:
        return _NULL
    return _span_after(name, correlation_ids, attributes)


@contextlib.contextmanager
def _span_after(
    name: str, correlation_ids: Sequence[object], attributes: dict[str, Any]
) -> Iterator[Any]:
    from opentelemetry import trace
    from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags

    contexts = []
    for correlation_id in correlation_ids:
        found = TRACED_ID.match(correlation_id) if isinstance(correlation_id, str) else None
        if found:
            contexts.append(
                SpanContext(
                    trace_id=int(found[1], 16),
                    span_id=int(found[2], 16),
                    is_remote=True,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                )
            )
    parent = trace.set_span_in_context(NonRecordingSpan(contexts[-1])) if contexts else None
    tracer = trace.get_tracer("parley", tracer_provider=_State.provider)
    with tracer.start_as_current_span(
        name,
        context=parent,
        links=[Link(context) for context in contexts],
        attributes={k: v for k, v in attributes.items() if v is not None},
    ) as span:
        yield span
