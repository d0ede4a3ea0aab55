"""What one Parley process owns: engine, sessions, queue, clients, the agent, and the
background loops (filer, worker, delivery, reconciler, retention, upstream deletions).

Built once per process (by the app's lifespan, or by `parley worker`), closed on exit, and
passed down; nothing here is global. This is the composition root of `parley worker`, so it
imports no door and not FastAPI: the HTTP side adds its own services in `app.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley.agent.limiter import UpstreamLimiter
from parley.agent.llm import LLM, create_client
from parley.agent.outcome import InputGate
from parley.agent.pricing import Price, load_prices
from parley.agent.safety import Limits
from parley.agent.tools import load_tools
from parley.agent.turn import Agent, AgentConfig
from parley.channels import registry
from parley.channels.base import ParsedWebhook
from parley.config import Settings
from parley.delivery.gateway import ChannelGateway
from parley.delivery.handoff_notices import HandoffNotifier, NoticeConfig
from parley.delivery.outbox import Deliverer
from parley.delivery.pacing import build_pacer
from parley.http_client import create_http_client
from parley.observability import tracing
from parley.queue.base import Queue
from parley.queue.memory import MemoryQueue
from parley.queue.redis import RedisQueue
from parley.store.crypto import SecretBox, secret_box
from parley.store.db import (
    create_engine,
    create_probe_engine,
    create_send_record_engine,
    create_sessionmaker,
    create_shared_engine,
    priority_pending,
)
from parley.store.direct import DirectWrites
from parley.store.migrate import upgrade
from parley.store.queries.account_directory import AccountDirectory
from parley.store.queries.outbox import release_holds
from parley.store.queries.upstream_deletions import release_deletion_holds
from parley.worker.backlog import run_backlog_sampler
from parley.worker.filer import Filer
from parley.worker.handback import run_idle_handback
from parley.worker.media import MediaConfig, MediaReader
from parley.worker.process import ConversationProcessor, Replies
from parley.worker.reconcile import resignal, run_reconciler
from parley.worker.retention import Retention
from parley.worker.runner import Worker
from parley.worker.upstream_deleter import UpstreamDeleter

log = structlog.get_logger(__name__)

DELIVERY_CONCURRENCY = 16
"""Sends in flight per process; on PostgreSQL each holds one connection of delivery's own
pool for its call (see `create_send_record_engine`), so the pool has as many."""

API_VIEWS = 20
"""On SQLite, the API's views of the one connection (`/v1`'s transactions, callers' token
lookups): as many requests' transactions can be under way at once (the pool of other
backends is as large)."""

Role = Literal["serve", "api", "worker"]


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    record_engine: AsyncEngine | None
    """Delivery's own connections for recording sends (PostgreSQL); None on SQLite."""
    probe_engine: AsyncEngine | None
    """`/readyz`'s own connection to the database (PostgreSQL); None on SQLite."""
    api_engine: AsyncEngine
    """The API's requests' (`/v1`'s turns, callers' token lookups): on SQLite, views of
    `engine`'s one connection in a pool of their own (`create_shared_engine`), so that a
    request does not wait behind the channels' background for the pool of one; elsewhere
    `engine` itself."""
    api_sessions: async_sessionmaker[AsyncSession]
    queue: Queue
    http: httpx.AsyncClient
    llm: LLM
    agent: Agent
    gate: InputGate
    """The input checks every door runs before the model (length, cards, moderation)."""
    prices: dict[str, Price]
    gateway: ChannelGateway
    deliverer: Deliverer
    processor: ConversationProcessor
    worker: Worker
    filer: Filer
    """Files the inbox's webhooks; runs where the worker runs (`serve`, `worker`)."""
    secrets: SecretBox | None
    """Users' secrets' and accounts' credentials' encryption (PARLEY_SECRET_KEY); None when
    secrets are off."""
    accounts: AccountDirectory
    """The configured accounts' credentials, remembered for the webhook door and sends."""
    upstream_deleter: UpstreamDeleter
    """Deletes upstream what expired or was erased (runs where the worker runs)."""
    retention: Retention
    """Deletes conversations idle past PARLEY_RETENTION_DAYS (runs where the worker runs)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


SOLE_FILER_POLL_S = 2.0
"""How often `parley serve` on SQLite looks at its inbox unwoken: a safety net only."""


def build_queue(settings: Settings) -> Queue:
    if settings.redis_url is None:
        return MemoryQueue()
    lease = settings.parley_queue_lease_ms
    return RedisQueue.from_url(settings.redis_url, lease_ms=lease, claim_idle_ms=lease)


def build_runtime(settings: Settings) -> Runtime:
    engine = create_engine(settings.database_url)
    tracing.instrument_engine(engine)
    sessions = create_sessionmaker(engine)
    api_engine = create_shared_engine(engine, pool_size=API_VIEWS)
    if api_engine is not engine:
        tracing.instrument_engine(api_engine)
    record_engine = create_send_record_engine(
        settings.database_url, connections=DELIVERY_CONCURRENCY
    )
    if record_engine is not None:
        tracing.instrument_engine(record_engine)
    direct = DirectWrites.of(engine, bounded=True)
    # On PostgreSQL the turns' and the sends' transactions go without a session too; the
    # filer keeps its session there (its advisory lock, and the reads inside its transaction).
    outcomes = direct or DirectWrites.on_postgresql(engine)
    queue = build_queue(settings)
    http = create_http_client(timeout=settings.graph_timeout)
    tracing.instrument_http_client(http)
    llm = build_llm(settings)
    secrets = secret_box(settings.secret("parley_secret_key"))
    agent = build_agent(settings, llm, sessions, http, secrets)
    gate = InputGate(build_limits(settings), agent)
    prices = load_prices(settings.parley_prices)
    accounts = AccountDirectory(sessions, secrets)
    gateway = ChannelGateway(http, settings, accounts=accounts)
    deliverer = Deliverer(
        sessions=sessions,
        gateway=gateway,
        max_attempts=settings.graph_max_attempts,
        send_timeout=settings.graph_timeout,
        concurrency=DELIVERY_CONCURRENCY,
        pacer=build_pacer(settings.redis_url),
        records=create_sessionmaker(record_engine) if record_engine is not None else None,
        direct=outcomes,
    )
    processor = build_processor(
        settings,
        sessions,
        agent,
        gate,
        prices,
        gateway,
        deliverer,
        accounts,
        direct=outcomes,
    )
    upstream_deleter = UpstreamDeleter(
        sessions=sessions, llm=llm, call_timeout=settings.openai_timeout_s
    )
    filer = Filer(
        sessions=sessions,
        queue=queue,
        parse=parse_webhook,
        accounts=accounts,
        batch=settings.parley_filer_batch,
        chunk=settings.parley_filer_chunk,
        poll_interval=settings.parley_filer_poll_interval,
        notify_handoffs=settings.parley_handoff_webhook_url is not None,
        yield_to=functools.partial(priority_pending, engine),
        direct=direct,
    )
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        record_engine=record_engine,
        probe_engine=create_probe_engine(settings.database_url),
        api_engine=api_engine,
        api_sessions=create_sessionmaker(api_engine),
        queue=queue,
        http=http,
        llm=llm,
        agent=agent,
        gate=gate,
        prices=prices,
        gateway=gateway,
        deliverer=deliverer,
        processor=processor,
        worker=Worker(
            queue=queue,
            processor=processor,
            concurrency=settings.worker_concurrency,
            filed=filer.caught_up,
        ),
        filer=filer,
        secrets=secrets,
        accounts=accounts,
        upstream_deleter=upstream_deleter,
        retention=Retention(
            sessions=sessions,
            days=settings.parley_retention_days,
            on_upstream=upstream_deleter.wake,
        ),
    )


def parse_webhook(channel: str, body: bytes) -> ParsedWebhook:
    """A stored webhook body read by the channel it came through."""
    return registry.get(channel).parse(body)


def build_llm(settings: Settings) -> LLM:
    client = create_client(
        api_key=settings.secret("openai_api_key"),
        base_url=settings.openai_base_url,
        timeout_s=settings.openai_timeout_s,
        max_retries=settings.openai_max_retries,
    )
    limiter = UpstreamLimiter(
        max_concurrency=settings.openai_max_concurrency,
        rpm=settings.openai_rpm,
        tpm=settings.openai_tpm,
        timeout_s=settings.openai_timeout_s,
    )
    return LLM(client, limiter)


def build_agent(
    settings: Settings,
    llm: LLM,
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    secrets: SecretBox | None,
) -> Agent:
    identity_key = settings.secret("parley_secret_key") or settings.secret("meta_app_secret")
    config = AgentConfig(
        model=settings.openai_model,
        instructions=settings.instructions_text,
        context=settings.parley_context,
        context_tokens=settings.parley_context_tokens,
        max_input_tokens=settings.parley_context_max_input_tokens,
        prompt_id=settings.openai_prompt_id,
        prompt_version=settings.openai_prompt_version,
        identity_key=(identity_key or "parley").encode(),
        max_tool_steps=settings.parley_max_tool_steps,
        timezone=settings.parley_timezone,
    )
    tools = load_tools(
        settings.parley_tools,
        sessions=sessions,
        http=http,
        builtins=settings.parley_builtin_tools,
        secrets=secrets,
        notify_handoffs=settings.parley_handoff_webhook_url is not None,
    )
    return Agent(llm, config, sessions, tools)


def build_limits(settings: Settings) -> Limits:
    return Limits(
        messages_per_minute=settings.parley_customer_messages_per_minute,
        max_input_chars=settings.parley_max_input_chars,
        redact_cards=settings.parley_redact_cards,
        moderation=settings.parley_moderation,
    )


def build_processor(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    agent: Agent,
    gate: InputGate,
    prices: dict[str, Price],
    gateway: ChannelGateway,
    deliverer: Deliverer,
    accounts: AccountDirectory | None = None,
    direct: DirectWrites | None = None,
) -> ConversationProcessor:
    replies = Replies(
        fallback=settings.parley_fallback_reply,
        unsupported=settings.parley_unsupported_reply,
        rate_limited=settings.parley_rate_limit_reply,
        refusal=settings.parley_moderation_reply,
    )
    media = MediaReader(
        source=gateway,
        agent=agent,
        sessions=sessions,
        config=MediaConfig(
            transcribe=settings.parley_transcribe,
            transcribe_model=settings.parley_transcribe_model,
        ),
        concurrency=settings.parley_media_concurrency,
    )
    return ConversationProcessor(
        sessions=sessions,
        agent=agent,
        gate=gate,
        receipts=gateway,
        replies=replies,
        on_outbox=deliverer.wake,
        max_attempts=settings.parley_max_turn_attempts,
        prices=prices,
        accounts=accounts,
        media=media,
        direct=direct,
    )


async def start_background(runtime: Runtime) -> None:
    """Start the filer, worker, delivery and reconciler, after picking up what the last run
    left (the filer begins with whatever is still in the inbox)."""
    settings = runtime.settings
    if settings.queue_backend == "memory":
        async with runtime.sessions() as session:
            await release_holds(session)
            await release_deletion_holds(session)
            await session.commit()
    try:
        await resignal(runtime.sessions, runtime.queue, older_than=None)
    except Exception:
        # The queue (or the store) is not there yet: the reconciler signals again shortly.
        log.exception("runtime.resignal_failed")
    runtime.tasks = [
        asyncio.create_task(runtime.filer.run(), name="filer"),
        asyncio.create_task(runtime.worker.run(), name="worker"),
        asyncio.create_task(runtime.deliverer.run(), name="delivery"),
        asyncio.create_task(
            run_reconciler(
                runtime.sessions,
                runtime.queue,
                interval=settings.parley_reconcile_interval,
                older_than=timedelta(seconds=settings.parley_reconcile_after),
            ),
            name="reconciler",
        ),
        asyncio.create_task(runtime.retention.run(), name="retention"),
        asyncio.create_task(runtime.upstream_deleter.run(), name="upstream-deleter"),
    ]
    notifier = build_notifier(runtime)
    if notifier is not None:
        runtime.tasks.append(asyncio.create_task(notifier.run(), name="handoff-notices"))
    idle = settings.parley_handoff_idle_minutes
    if idle is not None:
        # Often enough that a hand-back comes within a tenth of the idle time (at most 30 s).
        interval = min(max(idle * 6, 0.2), 30.0)
        runtime.tasks.append(
            asyncio.create_task(
                run_idle_handback(
                    runtime.sessions,
                    runtime.queue,
                    idle=timedelta(minutes=idle),
                    interval=interval,
                ),
                name="idle-handback",
            )
        )


def build_notifier(runtime: Runtime) -> HandoffNotifier | None:
    """The handoff notices' sender, where PARLEY_HANDOFF_WEBHOOK_URL is set."""
    settings = runtime.settings
    if settings.parley_handoff_webhook_url is None:
        return None
    key = settings.secret("parley_handoff_webhook_secret") or settings.secret("parley_secret_key")
    if key is None:
        log.warning("handoff_notice.unsigned")
    config = NoticeConfig(
        url=settings.parley_handoff_webhook_url,
        secret=key.encode() if key else None,
        max_attempts=settings.parley_handoff_webhook_attempts,
    )
    return HandoffNotifier(sessions=runtime.sessions, http=runtime.http, config=config)


async def stop_background(runtime: Runtime) -> None:
    """Running turns get PARLEY_SHUTDOWN_GRACE seconds; what is left is answered after restart."""
    grace = runtime.settings.parley_shutdown_grace
    await runtime.worker.stop(grace)
    await runtime.deliverer.stop(grace)
    for task in runtime.tasks:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)


async def close(runtime: Runtime) -> None:
    await runtime.deliverer.close()
    await runtime.queue.close()
    await runtime.llm.close()
    await runtime.http.aclose()
    await runtime.accounts.close()
    if runtime.api_engine is not runtime.engine:
        await runtime.api_engine.dispose()
    await runtime.engine.dispose()
    for own in (runtime.record_engine, runtime.probe_engine):
        if own is not None:
            await own.dispose()


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, role: Role, *, metrics: bool = True
) -> AsyncIterator[Runtime]:
    """The process's runtime, with the background loops running unless `role` is `api`.

    Args:
        metrics: this process serves /metrics, so it keeps the backlog gauges fresh (a
            `parley worker` only with `--metrics-port`).
    """
    if role in ("serve", "api"):
        # What is pending, applied once however many processes start together (see the
        # migrations' lock); `preflight` has refused a SQLite file that is not there for `api`.
        await upgrade(settings.database_url)
    runtime = build_runtime(settings)
    if role == "serve" and runtime.engine.dialect.name == "sqlite":
        # One process owns an SQLite file, so its door is the only writer of the inbox and
        # wakes the filer at each commit: polling for other processes' webhooks ten times a
        # second was most of an idle process's CPU.
        runtime.filer.poll_at_least(SOLE_FILER_POLL_S)
    background = role in ("serve", "worker")
    sampler = None
    try:
        if background:
            await start_background(runtime)
        if metrics:
            sampler = asyncio.create_task(
                run_backlog_sampler(runtime.sessions, interval=settings.parley_metrics_interval),
                name="backlog-sampler",
            )
        yield runtime
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        if background:
            await stop_background(runtime)
        await close(runtime)
        log.info("runtime.closed", role=role)
