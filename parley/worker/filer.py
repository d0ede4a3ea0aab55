"""The filer: acknowledged webhook bodies from the inbox become messages and statuses.

It runs off the acknowledgement path, in batches, oldest first, one filer at a time (see
`take_oldest` for why that keeps each conversation in order). A batch's inbox rows are deleted
in the transaction that files them, so a crash either filed a row or left it for the next start.

A transaction files at most `chunk` items (messages, statuses, events). Meta batches: one body
may carry a thousand messages, and filing them in one transaction would hold SQLite's one
writer for seconds, with every acknowledgement, `/readyz` and `/v1` call waiting behind it. So
such a body is filed a chunk per transaction, in its order, and its row is deleted with its last
chunk. Nothing records how far it got: a crash between chunks (or another process's filer taking
its turn on PostgreSQL) files the body again from its start, and what is already filed is a
no-op, as when Meta delivers a webhook twice (messages by their channel id, statuses only
forward). Since its row stays the oldest until then, no later body is filed before it.

On SQLite the transaction holds the file's one write lock, which the door's acknowledgements
wait for (`store.db.priority_commit`), so everything it can read beforehand is read before it
begins: the rows, and what `record_inbound` reads (`look_up_inbound`). For customers already
known, with a conversation open, it then only writes: two trips to SQLite's thread instead of
seven. What was read is checked as it is written, and if anything changed meanwhile (an erasure
deleted a row, an operator closed a conversation) the transaction keeps nothing and the rows are
read again (`Stale`).

The door comes first. Filing shares the process's event loop with the door, so while the door
of the same process is pressed (its last group commit took many webhooks at once: they
arrive faster than it commits them), the filer waits until it is quiet again, for at most
`DOOR_FIRST_WAIT` before each transaction. A burst is acknowledged at the door's own pace and
filed right after it; the answers come later by as long as the burst lasts,
while a webhook not acknowledged in time is one that Meta sends again and counts against the
endpoint. Measured in docs/benchmarks.md (2026-12-02, session 11).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.channels.base import InboundMessage, ParsedWebhook, StatusUpdate
from parley.channels.text import storable
from parley.observability.metrics import INBOX_UNREADABLE, WEBHOOK_MESSAGES
from parley.poll_loop import PollLoop
from parley.queue.base import Queue
from parley.store.db import last_statement_of
from parley.store.direct import DirectWrites, Stale
from parley.store.queries.account_directory import AccountDirectory, Directory
from parley.store.queries.events import apply_events
from parley.store.queries.inbound import (
    InboundLookup,
    Stored,
    look_up_inbound,
    record_inbound,
)
from parley.store.queries.inbox import (
    InboxRow,
    mark_unreadable,
    removal,
    remove,
    take_oldest,
    take_oldest_directly,
)
from parley.store.queries.statuses import advance_statuses, advance_statuses_directly

log = structlog.get_logger(__name__)

_REFUSED = (IntegrityError, DataError, DBAPIError, UnicodeError)
"""What the store may raise for a row it will never take, however often it is tried (SQLite's
driver raises `UnicodeEncodeError` itself, unwrapped; asyncpg's refusal of text it cannot
encode is a bare `DBAPIError`): `_refused` tells these from a store that is down. Text is made
storable when parsed (`storable`), so this is the last line, not the usual path."""

_LIMITS = {"channel_message_id": 255, "account_external_id": 128, "user_id": 160, "phone": 32}
"""The widths of the store's columns for a message's ids: an item with a longer one is not
filed (its batch is); longer names are cut."""


def _refused(exc: BaseException) -> bool:
    """Whether `exc` is the store refusing a row's values, not the store being unreachable."""
    if isinstance(exc, (IntegrityError, DataError, UnicodeError)):
        return True
    if isinstance(exc, (OperationalError, InterfaceError)) or not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return False
    cause: BaseException | None = exc.orig
    while cause is not None:
        if isinstance(cause, UnicodeError):
            return True
        cause = cause.__cause__
    # A statement the server refused (a value too wide for its index, …): its SQLSTATE says so.
    return str(getattr(exc.orig, "sqlstate", "") or "")[:2] in ("22", "23", "54")


LINGER = 0.005
"""How long the filer lets webhooks gather before a transaction that follows closely on one
that filed a few (`LINGER_AFTER`): under a steady stream, rows come one or two per commit of
the door (a status report is a webhook of its own, three for every reply sent), and each
transaction costs about as much as the rows it files. A webhook alone is filed at once."""
LINGER_AFTER = 0.05
"""How soon after a transaction that filed a few rows the next one counts as following it."""

DOOR_FIRST_WAIT = 0.2
"""The longest the filer waits for a pressed door (`Filer.give_way_to`) before filing one
transaction's worth all the same: a door pressed for minutes still has its webhooks filed, a
transaction every 0.2 s at least, and the rest once it is quiet."""

Parser = Callable[[str, bytes], ParsedWebhook]


@dataclass
class _Filed:
    waiting: list[int] = field(default_factory=list)
    rows: int = 0
    items: int = 0  # messages, statuses and events filed in this transaction
    more: bool = False  # rows were left for the next transaction (a body in chunks)
    part: _Part | None = None  # how far a body filed in chunks got, once committed
    done: list[int] = field(default_factory=list)  # filed inbox ids, deleted at commit
    lines: list[dict[str, object]] = field(default_factory=list)  # logged once committed
    accepted: list[Stored] = field(default_factory=list)
    messages: dict[str, int] = field(default_factory=dict)  # per channel, counted once committed
    pending: _Pending = field(default_factory=lambda: _Pending())
    looked_up: InboundLookup | None = None
    """What `record_inbound` reads, read before the transaction (SQLite); dropped once an event
    is applied, which may change the customers and conversations it read."""


@dataclass
class _Pending:
    """Messages and statuses of this transaction's rows not filed yet: filed together, in a few
    statements for them all (`record_inbound`, `advance_statuses`), before the next row's
    events (which may name them) and before the commit."""

    messages: list[InboundMessage] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    lines: list[tuple[dict[str, object], int]] = field(default_factory=list)
    """Each row's log line, with how many of `statuses` are its."""


@dataclass(frozen=True)
class _Part:
    """A body being filed in chunks: its row, what it parsed into, and its items filed so far
    by this process."""

    row_id: int
    parsed: ParsedWebhook
    filed: int


def _size(parsed: ParsedWebhook) -> int:
    return len(parsed.messages) + len(parsed.statuses) + len(parsed.events)


def _items(parsed: ParsedWebhook, start: int, stop: int) -> ParsedWebhook:
    """Items `start` to `stop` of `parsed`, counting its messages, then its statuses, then its
    events (the order they are filed in when the body is filed whole)."""
    messages, statuses = len(parsed.messages), len(parsed.statuses)
    return ParsedWebhook(
        messages=parsed.messages[start:stop],
        statuses=parsed.statuses[max(start - messages, 0) : max(stop - messages, 0)],
        skipped=parsed.skipped if start == 0 else 0,
        events=parsed.events[
            max(start - messages - statuses, 0) : max(stop - messages - statuses, 0)
        ],
    )


class Filer:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        queue: Queue,
        parse: Parser,
        accounts: AccountDirectory,
        batch: int,
        poll_interval: float,
        chunk: int = 50,
        notify_handoffs: bool = False,
        yield_to: Callable[[], bool] | None = None,
        direct: DirectWrites | None = None,
    ) -> None:
        """
        Args:
            batch: most inbox rows taken per transaction.
            chunk: most items (messages, statuses, events) filed per transaction.
            yield_to: True while an acknowledgement waits for this transaction to end (on
                SQLite, the inbox writer's commit waits for the file's one write lock): the
                transaction then commits after the row it is filing, and the rest of its rows
                go in the next one.
            direct: SQLite's line: the rows are read on it before each transaction, and
                status reports alone are filed on it without a session
                (`_file_statuses_directly`).
        """
        self._sessions = sessions
        self._direct = direct
        self._notify = notify_handoffs
        self._queue = queue
        self._parse = parse
        self._accounts = accounts
        self._batch = batch
        self._chunk = chunk
        self._poll = poll_interval
        self._yield_to = yield_to
        self._part: _Part | None = None
        self._trickled: float | None = None
        """When the last transaction ended that filed a few rows (`LINGER`), if it did."""
        self.caught_up = asyncio.Event()
        """Set unless the filer's last transaction left rows waiting in the inbox (a full
        batch, or a body filed in part): then the worker gives way to it (`Worker`)."""
        self.caught_up.set()
        self._door_quiet: asyncio.Event | None = None
        self._loop = PollLoop(
            self._file_more, failed="filer.failed", retry=poll_interval, wake_during_retry=False
        )

    def wake(self) -> None:
        """Rows were committed in this process: file them now rather than at the next poll."""
        self._loop.wake()

    def give_way_to(self, quiet: asyncio.Event) -> None:
        """File while `quiet` is set (the door of the same process keeps up with its webhooks,
        `InboxWriter.quiet`); while it is clear, wait for it, at most `DOOR_FIRST_WAIT` before
        each transaction."""
        self._door_quiet = quiet

    def poll_at_least(self, seconds: float) -> None:
        """Look at the inbox unwoken no more often than every `seconds`."""
        self._poll = max(self._poll, seconds)

    async def run(self) -> None:
        """File until cancelled; first whatever a previous run left in the inbox."""
        await self._loop.run()

    async def _file_more(self) -> float:
        await self._behind_the_door()
        loop = asyncio.get_running_loop()
        if self._trickled is not None and loop.time() - self._trickled < LINGER_AFTER:
            await asyncio.sleep(LINGER)
        filed = await self._file_batch()
        # A round that found a few rows, not a backlog: more are likely to follow soon.
        few = 0 < filed.rows < self._batch and not filed.more
        self._trickled = loop.time() if few else None
        return self._poll if self.caught_up.is_set() else 0

    async def _behind_the_door(self) -> None:
        quiet = self._door_quiet
        if quiet is None or quiet.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(quiet.wait(), timeout=DOOR_FIRST_WAIT)

    async def file_batch(self) -> int:
        """File the oldest rows, a transaction's worth; returns how many rows were taken, a
        body filed in part included (0: none, or not our turn)."""
        return (await self._file_batch()).rows

    async def _file_batch(self) -> _Filed:
        try:
            filed = await self._file_oldest()
        except BaseException:
            self.caught_up.set()  # a store that fails must not hold the turns back as well
            raise
        if filed.more or filed.rows >= self._batch:
            self.caught_up.clear()
        else:
            self.caught_up.set()
        return filed

    async def _file_oldest(self) -> _Filed:
        try:
            filed = await self._file(limit=self._batch)
        except _REFUSED as exc:
            if not _refused(exc):
                raise
            # One row the store refuses must not hold back the others: file one at a time,
            # and keep the row that still fails, marked.
            log.warning("filer.batch_refused", exc_info=True)
            filed = await self._file_alone()
        if filed.rows:
            await self._signal(filed.waiting)
        return filed

    async def _file(self, *, limit: int) -> _Filed:
        parsed: dict[int, ParsedWebhook] = {}  # by inbox row, parsed once for both paths
        direct = self._direct
        if direct is None or not direct.ready:
            return await self._file_in_session(limit, parsed)
        # SQLite: the rows are read, parsed and looked up before the transaction, which then
        # holds the file's one write lock, that the door's acknowledgements wait for, only
        # while it writes.
        rows = await take_oldest_directly(direct, limit=limit)
        if not rows:
            return _Filed()
        part = self._part
        for row in rows:
            if part is not None and part.row_id == row.id:
                continue  # a body filed in chunks: parsed already
            try:
                parsed[row.id] = self._parse(row.channel, row.body)
            except Exception:  # left for the transaction, which keeps it marked unreadable
                continue
        if part is None:
            filed = await self._file_statuses_directly(direct, rows, parsed)
            if filed is not None:
                return filed
        try:
            return await self._file_in_session(limit, parsed, rows)
        except Stale:
            log.info("filer.rows_gone", rows=len(rows))
            return _Filed(more=True)

    async def _file_statuses_directly(
        self, direct: DirectWrites, rows: list[InboxRow], parsed: dict[int, ParsedWebhook]
    ) -> _Filed | None:
        """On SQLite, `rows` (the oldest, read outside a transaction and `parsed`) filed
        without a session when they are the channels' status reports alone (three for each
        message Parley sends: sent, delivered, read), in a read and one trip that commits;
        None when they are anything else, left to a session (`_file_in_session`).

        The messages the reports name are read outside the transaction, which then moves the
        messages and removes the rows only if both are as they were read (one filer runs at a
        time, but delivery may move a message meanwhile): otherwise nothing is kept and the
        rows go to a session.

        Measured with `bench/e2e.py` (docs/benchmarks.md, 2026-12-03): a status webhook,
        door and filing, cost 1.9-2.1 ms of CPU with a session (a transaction of four
        statements per batch), 1.4-1.8 ms this way."""
        statuses: list[StatusUpdate] = []
        for row in rows:
            items = parsed.get(row.id)
            if items is None or items.messages or items.events:
                return None  # unreadable (marked in a session), or more than statuses
            statuses += items.statuses
        if len(statuses) > self._chunk or any(s.status == "failed" for s in statuses):
            return None
        moved, steps = await advance_statuses_directly(direct, statuses=statuses)
        try:
            await direct.commit([*steps, removal(direct, [row.id for row in rows])])
        except Stale:
            log.info("filer.direct_stale", rows=len(rows))
            return None
        applied = iter(moved)
        for row in rows:
            items = parsed[row.id]
            log.info(
                "webhook.filed",
                **_line(row, items),
                statuses_applied=sum(next(applied) for _ in items.statuses),
            )
        return _Filed(rows=len(rows), items=len(statuses))

    async def _file_in_session(
        self,
        limit: int,
        parsed: dict[int, ParsedWebhook],
        read: list[InboxRow] | None = None,
    ) -> _Filed:
        """The oldest rows filed in a session's transaction; `read`: they were read before it
        (SQLite), and so was what `record_inbound` reads (`look_up_inbound`)."""
        filed = _Filed()
        # Read before the session opens: on SQLite the session holds the process's one
        # connection, which a snapshot read would wait for.
        directory = await self._accounts.snapshot()
        if read is not None and self._direct is not None:
            messages = self._first_messages(read, parsed)
            if messages:
                filed.looked_up = await look_up_inbound(self._direct, messages)
        async with self._sessions() as session:
            rows = read if read is not None else await take_oldest(session, limit=limit)
            if not rows:
                return filed
            for row in rows:
                if not await self._file_row(session, row, filed, directory, parsed.get(row.id)):
                    filed.more = True
                    break
                filed.rows += 1
                if self._yield_to is not None and filed.rows < len(rows) and self._yield_to():
                    filed.more = True
                    break
            await _file_pending(session, filed)
            await last_statement_of(session)  # the removal carries the COMMIT (SQLite)
            await remove(session, filed.done, read_before=read is not None)
            await session.commit()
        self._part = filed.part
        for channel, count in filed.messages.items():
            WEBHOOK_MESSAGES.labels(channel).inc(count)
        for line in filed.lines:
            log.info("webhook.filed", **line)
        for stored in filed.accepted:
            _log_accepted(stored)
        return filed

    def _first_messages(
        self, rows: list[InboxRow], parsed: dict[int, ParsedWebhook]
    ) -> list[InboundMessage]:
        """The messages a transaction over `rows` can file: at most a chunk's worth, from
        where a body filed in chunks got to."""
        messages: list[InboundMessage] = []
        part = self._part
        for row in rows:
            if part is not None and part.row_id == row.id:
                messages += part.parsed.messages[part.filed : part.filed + self._chunk]
            elif row.id in parsed:
                messages += parsed[row.id].messages[: self._chunk - len(messages)]
            if len(messages) >= self._chunk:
                break
        return messages

    async def _file_alone(self) -> _Filed:
        filed = _Filed()
        for _ in range(self._batch):
            try:
                one = await self._file(limit=1)
            except _REFUSED as exc:
                if not _refused(exc):
                    raise
                one = await self._set_aside(type(exc).__name__)
            if not one.rows:
                break
            filed.rows += one.rows
            filed.more = filed.more or one.more
            filed.waiting += [c for c in one.waiting if c not in filed.waiting]
        return filed

    async def _set_aside(self, error: str) -> _Filed:
        async with self._sessions() as session:
            rows = await take_oldest(session, limit=1)
            if not rows:
                return _Filed()
            await mark_unreadable(session, row_id=rows[0].id, error=f"store refused: {error}")
            await session.commit()
        INBOX_UNREADABLE.inc()
        log.error("webhook.unfiled", inbox_id=rows[0].id, channel=rows[0].channel, error=error)
        return _Filed(rows=1)

    async def _file_row(
        self,
        session: AsyncSession,
        row: InboxRow,
        filed: _Filed,
        directory: Directory,
        known: ParsedWebhook | None = None,
    ) -> bool:
        """File `row` (`known`: already parsed), or as much of it as this transaction has
        room for; False when there was no room at all (the row is the next transaction's
        first)."""
        part = self._part if self._part is not None and self._part.row_id == row.id else None
        if part is None:
            try:
                parsed = known or self._parse(row.channel, row.body)
            except Exception as exc:
                await _mark_unreadable(session, row, exc)
                return True
            part = _Part(row.id, parsed, filed=0)
        room = self._chunk - filed.items
        left = _size(part.parsed) - part.filed
        if left > room and filed.items:
            return False
        if part.filed == 0:
            _warn_unknown(row, part.parsed, directory)
        stop = part.filed + min(left, room)
        await self._file_items(session, row, _items(part.parsed, part.filed, stop), filed)
        filed.items += stop - part.filed
        if stop < _size(part.parsed):
            # The rest of the body goes in the transactions after this one.
            filed.part = dataclasses.replace(part, filed=stop)
            filed.more = True
        else:
            filed.done.append(row.id)
        return True

    async def _file_items(
        self,
        session: AsyncSession,
        row: InboxRow,
        parsed: ParsedWebhook,
        filed: _Filed,
    ) -> None:
        messages = _fitting(row, parsed.messages)
        line = {**_line(row, parsed), "statuses_applied": 0}
        filed.lines.append(line)
        pending = filed.pending
        pending.messages += messages
        pending.correlation_ids += [row.correlation_id] * len(messages)
        pending.statuses += parsed.statuses
        pending.lines.append((line, len(parsed.statuses)))
        filed.messages[row.channel] = filed.messages.get(row.channel, 0) + len(parsed.messages)
        if parsed.events:
            await _file_pending(session, filed)
            filed.looked_up = None
            events = await apply_events(
                session,
                events=parsed.events,
                correlation_id=row.correlation_id,
                notify=self._notify,
            )
            line.update(events=len(parsed.events), events_applied=events)

    async def _signal(self, conversation_ids: list[int]) -> None:
        # The messages are stored: a lost signal only delays them until the reconciler runs.
        try:
            await self._queue.signal_many(conversation_ids)
        except Exception:
            log.exception("filer.signal_failed", conversations=len(conversation_ids))


async def _file_pending(session: AsyncSession, filed: _Filed) -> None:
    """File the messages, then the statuses, of the rows taken since the last call."""
    pending, filed.pending = filed.pending, _Pending()
    stored: list[Stored] = []
    waiting = await record_inbound(
        session,
        messages=pending.messages,
        correlation_id=pending.correlation_ids,
        stored=stored,
        looked_up=filed.looked_up,
    )
    filed.accepted += stored
    filed.waiting += [c for c in waiting if c not in filed.waiting]
    moved = iter(await advance_statuses(session, statuses=pending.statuses))
    for line, count in pending.lines:
        line["statuses_applied"] = sum(next(moved) for _ in range(count))


async def _mark_unreadable(session: AsyncSession, row: InboxRow, exc: Exception) -> None:
    """Signed by the channel but not readable: kept for audit, never retried."""
    error = storable(f"{type(exc).__name__}: {exc}")
    await mark_unreadable(session, row_id=row.id, error=error)
    INBOX_UNREADABLE.inc()
    log.warning(
        "webhook.unreadable",
        inbox_id=row.id,
        channel=row.channel,
        correlation_id=row.correlation_id,
        reason=str(exc),
    )


def _line(row: InboxRow, parsed: ParsedWebhook) -> dict[str, object]:
    """The `webhook.filed` line's fields for `row`'s items `parsed`."""
    return {
        "channel": row.channel,
        "correlation_id": row.correlation_id,
        "messages": len(parsed.messages),
        "statuses": len(parsed.statuses),
        "skipped": parsed.skipped,
    }


def _log_accepted(stored: Stored) -> None:
    """The line an operator looks a customer's message up by: one per message filed (a
    re-delivered one, already filed, gets none)."""
    message = stored.message
    log.info(
        "webhook.accepted",
        channel=message.channel,
        account_id=stored.account_id,
        account_external_id=message.account_external_id,
        conversation_id=stored.conversation_id,
        channel_message_id=message.channel_message_id,
        kind=message.kind,
        correlation_id=stored.correlation_id,
    )


def _warn_unknown(row: InboxRow, parsed: ParsedWebhook, directory: Directory) -> None:
    """Accounts customers wrote to that will not be answered: the channel has configured
    accounts and these are not among them. Their messages are stored for the record (see
    `account_directory`)."""
    if not directory.is_configured(row.channel):
        return
    named = {m.account_external_id for m in parsed.messages}
    for external_id in sorted(x for x in named if directory.lookup(row.channel, x) is None):
        log.warning(
            "webhook.unknown_account",
            channel=row.channel,
            account_external_id=external_id,
            correlation_id=row.correlation_id,
        )


def _fitting(row: InboxRow, messages: list[InboundMessage]) -> list[InboundMessage]:
    """`messages` as the store's columns hold them: one with an id wider than its column is
    left out (logged), a name too long is cut, a kind too long is ``unsupported``."""
    fitting = []
    for message in messages:
        wide = [k for k, n in _LIMITS.items() if len(getattr(message, k) or "") > n]
        if wide:
            log.warning(
                "webhook.item_too_wide",
                channel=row.channel,
                fields=wide,
                correlation_id=row.correlation_id,
            )
            continue
        fitting.append(
            dataclasses.replace(
                message,
                contact_name=_cut(message.contact_name, 255),
                contact_username=_cut(message.contact_username, 255),
                kind=message.kind if len(message.kind) <= 32 else "unsupported",
            )
        )
    return fitting


def _cut(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit]
