"""`POST /webhooks/{channel}` as plain ASGI: verify, check the body is a JSON object, append
it to the inbox (group commit), answer 200 once committed. Filing happens afterwards.

This is the hottest route and does the least work that keeps the promise: no dependency
injection, no request object, no routing table, one `orjson.loads`. Every other request
passes through to the FastAPI app untouched. Its metrics cost two dict lookups and a clock
read: the label children are bound once, per registered channel, when the door is built.

The door logs `webhook.received` per body it acknowledges; `webhook.accepted`, one line per
message with its channel message id, is the filer's, once the message is filed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import orjson
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.asgi_body import BodyTimeout, BodyTooLarge, ClientGone, read_body
from parley.channels import registry
from parley.channels.base import Channel
from parley.config import Settings
from parley.errors import BadSignature, UnknownChannel, WebhookNotConfigured
from parley.ingress import verification
from parley.ingress.inbox import InboxUnavailable, InboxWriter
from parley.observability import tracing
from parley.observability.correlation import HEADER, incoming_correlation_id
from parley.observability.logging import writes
from parley.observability.metrics import (
    WEBHOOK_ACK_SECONDS,
    WEBHOOK_OUTCOMES,
    WEBHOOKS,
)
from parley.runtime import Runtime
from parley.store.db import create_engine, create_inbox_engine
from parley.store.queries.account_directory import AccountDirectory, Directory
from parley.store.queries.inbox import Arrival

log = structlog.get_logger(__name__)

PREFIX = "/webhooks/"
TEXT = b"text/plain; charset=utf-8"
NOT_CONFIGURED = b"webhook signing is not configured"
OUTCOMES = {
    200: "accepted",
    400: "unreadable",
    401: "bad_signature",
    408: "unreadable",
    413: "too_large",
    503: "unavailable",
}
"""The outcome each answer counts as in `parley_webhooks_total` (a 401 for a missing app
secret is `not_configured`, told apart by its text)."""


class _Counters:
    """The door's metric children, bound once per channel (at start for the registered ones,
    on first use for one registered later): a request only looks them up."""

    def __init__(self, channels: list[str]) -> None:
        self._channels: dict[str, _ChannelCounters] = {}
        for name in channels:
            self._bind(name)

    def _bind(self, name: str) -> _ChannelCounters:
        bound = _ChannelCounters(
            outcomes={outcome: WEBHOOKS.labels(name, outcome) for outcome in WEBHOOK_OUTCOMES},
            ack=WEBHOOK_ACK_SECONDS.labels(name),
        )
        self._channels[name] = bound
        return bound

    def count(self, channel: str, outcome: str, started: float) -> None:
        bound = self._channels.get(channel) or self._bind(channel)
        bound.outcomes[outcome].inc()
        if outcome == "accepted":
            bound.ack.observe(time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class _ChannelCounters:
    outcomes: dict[str, Counter]
    ack: Histogram


@dataclass
class Door:
    """What the webhook door needs; `writer` and `accounts` are set while the app's lifespan
    runs."""

    settings: Settings
    writer: InboxWriter | None = None
    accounts: AccountDirectory | None = None


@contextlib.asynccontextmanager
async def open_inbox(door: Door, runtime: Runtime, *, file_here: bool) -> AsyncIterator[None]:
    """Run the inbox writer for the app's lifetime; `file_here` wakes this process's filer
    after each commit.

    On SQLite the writer has a connection of its own that goes ahead of the shared one
    (`store/db.py`), so an acknowledgement waits for at most one transaction of the shared
    connection, not behind every turn queued for it; it commits with synchronous=FULL, so a
    200 survives a power cut. On PostgreSQL it has an autocommit connection of its own
    (`create_inbox_engine`): a batch is one round trip, and never waits for a connection.
    """
    settings = runtime.settings
    own: AsyncEngine | None = create_inbox_engine(settings.database_url)
    if own is None:  # SQLite
        own = create_engine(settings.database_url, durable=True, ahead_of=runtime.engine)
    tracing.instrument_engine(own)
    writer = InboxWriter(
        own,
        max_batch=settings.parley_inbox_batch,
        timeout=settings.parley_inbox_timeout,
        on_commit=runtime.filer.wake if file_here else None,
    )
    if file_here:
        runtime.filer.give_way_to(writer.quiet)
        runtime.worker.give_way_to(writer.quiet)
    writer.start()
    door.writer, door.accounts = writer, runtime.accounts
    try:
        yield
    finally:
        door.writer = door.accounts = None
        await writer.close()
        await own.dispose()


class WebhookDoor:
    """ASGI middleware that answers signed webhook POSTs itself."""

    def __init__(self, app: ASGIApp, door: Door) -> None:
        self.app = app
        self.door = door
        self.max_bytes = door.settings.parley_max_webhook_bytes
        self.body_timeout = door.settings.parley_body_timeout
        self.counters = _Counters(registry.names())
        self.new_correlation_id = tracing.correlation_id_factory()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        name = path[len(PREFIX) :]
        try:
            channel = registry.get(name)
        except UnknownChannel:
            if "/" in name:
                await self.app(scope, receive, send)
            else:  # a name nobody registered is a 404, like any unknown path
                await _answer(send, 404, b'{"detail":"Not Found"}', None, b"application/json")
            return
        started = time.perf_counter()
        correlation_id = incoming_correlation_id(scope) or self.new_correlation_id()
        try:
            status, text = await self._accept(channel, scope, receive, correlation_id)
        except ClientGone:  # hung up mid-body: nobody to answer, nothing worth a traceback
            log.info("http.client_gone", path=path, correlation_id=correlation_id)
            return
        await _answer(send, status, text, correlation_id, close=status == 408)
        outcome = "not_configured" if text == NOT_CONFIGURED else OUTCOMES[status]
        self.counters.count(channel.name, outcome, started)

    async def _accept(
        self, channel: Channel, scope: Scope, receive: Receive, correlation_id: str
    ) -> tuple[int, bytes]:
        try:
            body = await read_body(scope, receive, limit=self.max_bytes, timeout=self.body_timeout)
        except BodyTimeout:
            log.warning(
                "webhook.body_timeout",
                channel=channel.name,
                timeout=self.body_timeout,
                correlation_id=correlation_id,
            )
            return 408, b"request body timeout"
        except BodyTooLarge:
            log.warning(
                "webhook.too_large",
                channel=channel.name,
                limit=self.max_bytes,
                correlation_id=correlation_id,
            )
            return 413, b"payload too large"
        # Decoded only when looked up: verifying reads one header of the request.
        headers = Headers(raw=scope["headers"])
        accounts = self.door.accounts
        if accounts is None:
            return 503, b"store unavailable"
        try:
            directory = await accounts.snapshot()  # remembered: no query per webhook
        except Exception as exc:  # only on a first read, with the store down
            log.error("store.unavailable", path=scope["path"], error=type(exc).__name__)
            return 503, b"store unavailable"
        try:
            signer = verification.verify(channel, body, headers, self.door.settings, directory)
        except WebhookNotConfigured:
            log.error("webhook.no_app_secret", channel=channel.name, correlation_id=correlation_id)
            return 401, NOT_CONFIGURED
        except BadSignature:
            log.warning(
                "webhook.bad_signature", channel=channel.name, correlation_id=correlation_id
            )
            return 401, b"invalid signature"
        reason = _not_an_object(body)
        if reason is not None:
            log.warning(
                "webhook.bad_payload",
                channel=channel.name,
                reason=reason,
                correlation_id=correlation_id,
            )
            return 400, b"invalid payload"
        foreign = _foreign_accounts(channel, body, headers, signer, directory)
        if foreign:
            log.warning(
                "webhook.wrong_app_secret",
                channel=channel.name,
                accounts=foreign,
                correlation_id=correlation_id,
            )
            return 401, b"invalid signature"
        writer = self.door.writer
        try:
            if writer is None:
                raise InboxUnavailable("the app is not running")
            await writer.append(Arrival(channel.name, body, correlation_id))
        except InboxUnavailable as exc:
            # A 5xx makes the channel deliver the webhook again later: nothing is lost.
            log.error(
                "store.unavailable",
                path=scope["path"],
                error=str(exc),
                correlation_id=correlation_id,
            )
            return 503, b"store unavailable"
        if writes(logging.INFO):
            log.info(
                "webhook.received",
                channel=channel.name,
                bytes=len(body),
                correlation_id=correlation_id,
            )
        return 200, b""


def _foreign_accounts(
    channel: Channel,
    body: bytes,
    headers: Mapping[str, str],
    signer: verification.Signer,
    directory: Directory,
) -> list[str]:
    """The accounts the body names that its signer does not sign for.

    Only a deployment whose accounts have app secrets of their own needs to know which
    accounts a body names, so only there does the door parse it; a body the channel cannot
    read names none, and is kept for the filer to mark.
    """
    if signer.secret is None and not directory.app_secrets(channel.name):
        return []
    try:
        parsed = channel.parse(body)
    except Exception:
        return []
    return verification.foreign_accounts(channel, body, headers, signer, parsed, directory)


def _not_an_object(body: bytes) -> str | None:
    """Why `body` is refused outright (400), or None. Anything finer is the filer's to judge:
    a signed JSON object is kept even when its channel cannot read it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses a lone surrogate escape (``\ud800``) that the channels' parser reads
        # (and makes storable): only then is the body parsed a second time.
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return "body is not JSON"
    return None if isinstance(data, dict) else "body is not a JSON object"


async def _answer(
    send: Send,
    status: int,
    text: bytes,
    correlation_id: str | None,
    content_type: bytes = TEXT,
    *,
    close: bool = False,
) -> None:
    headers = [(b"content-length", str(len(text)).encode())]
    if close:  # a client too slow to send its body has its connection closed
        headers.append((b"connection", b"close"))
    if correlation_id is not None:
        headers.append((HEADER, correlation_id.encode()))
    if text:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})
