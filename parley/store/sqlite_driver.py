"""SQLAlchemy's aiosqlite dialect with one hand-over to SQLite's thread per statement, and
one SQLite connection that all of an engine's pooled connections share.

aiosqlite runs every sqlite3 call on the connection's own thread. SQLAlchemy's adapter makes
four such calls for one statement (open a cursor, execute, fetch the rows, close the
cursor), and each is a round trip: a queue put, the thread's wake-up, a callback scheduled
back onto the event loop, a greenlet switch. In profiles of `parley serve` the hand-overs
were the largest cost of a statement, far above SQLite's own few microseconds. Here one
function run on the thread opens, executes, fetches and closes, and hands back the rows with
the description, rowcount and lastrowid that SQLAlchemy reads afterwards.

The pool's connections are views of one aiosqlite connection (`_Line`): its thread runs the
functions queued for it one after another, in order, so a transaction sent whole in one trip
(BEGIN, its statements and COMMIT, see `commit_with_next_statement`) needs nobody to wait for
it. It is queued and the view is free for the next one at once; only a transaction that
needs the answer to one trip before it sends the next holds the line (`_Line.own`), and
what others send waits until its last trip is queued. With a pool of one connection, each
transaction held it from the pool's hand-over to the answer of its last trip: two passes of
a busy event loop (about 1 ms each under load) for well under 0.1 ms of SQLite, and `/v1`
on SQLite was held by that wait rather than by its CPU.

No library offers this: it queues the function with aiosqlite's `Connection._execute` (run a
callable on the connection's thread), as SQLAlchemy's own adapter reaches into aiosqlite's
queue to set the isolation level. `create_engine` uses it for `sqlite+aiosqlite` URLs, and
falls back to SQLAlchemy's adapter (and a pool of one connection) if an aiosqlite release
ever drops that method.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVER = "parley_aiosqlite"
AVAILABLE = callable(getattr(aiosqlite.Connection, "_execute", None))

_Description = tuple[tuple[Any, ...], ...] | None
_Outcome = tuple[_Description, list[Any], int, int | None]
Refusal = Callable[[int], Exception]
"""What a guarded statement raises when it changed another number of rows than expected, made
from the number it changed."""
_Guard = tuple[int, Refusal]
HeldStatement = tuple[str, Any, bool, _Guard | None]
"""A statement held back (`defer_next_statement`): its SQL, its parameters, executemany, and
the rowcount it must have (with what is raised otherwise), if any."""
_NO_OUTCOME: _Outcome = (None, [], -1, None)


BEGIN = "BEGIN IMMEDIATE"
LINE_TIMEOUT = 60.0
"""The longest a statement waits for another transaction of its engine to let the shared
connection go (the pool's own `pool_timeout` for SQLite)."""


def run_trip(
    connection: sqlite3.Connection,
    operation: str | None,
    parameters: Any,
    many: bool,
    begin: bool,
    commit: bool,
    deferred: Sequence[HeldStatement] = (),
    guard: _Guard | None = None,
) -> _Outcome:
    """On SQLite's thread: the whole statement, cursor opened and closed around it, after
    the transaction's BEGIN if it is the transaction's first and after the statements held
    back for it (`defer_next_statement`), and followed by its COMMIT if it is the last
    (`commit_with_next_statement`). With no `operation`, only the BEGIN, the held-back
    statements and the COMMIT. A statement whose guard refuses (`guard`, or a held-back
    one's) stops the trip there: nothing after it runs, the COMMIT neither, and its refusal
    is raised.

    A trip that carries the COMMIT ends its transaction whatever happens: if it fails, the
    transaction is rolled back here. The line was let go before it was queued (`_Line.last`),
    and the next transaction queued behind it must find none open."""
    try:
        if begin:
            connection.execute(BEGIN)
        for statement in deferred:
            _run_deferred(connection, statement)
        if operation is None:
            if commit:
                connection.commit()
            return _NO_OUTCOME
        cursor = connection.cursor()
        try:
            _execute(cursor, operation, parameters, many)
            _check(connection, guard, cursor.rowcount)
            description = cursor.description
            rows = cursor.fetchall() if description else []
            outcome = description, rows, cursor.rowcount, cursor.lastrowid
        finally:
            cursor.close()
        if commit:
            connection.commit()
        return outcome
    except BaseException:
        if commit and connection.in_transaction:
            connection.rollback()
        raise


def _check(connection: sqlite3.Connection, guard: _Guard | None, rowcount: int) -> None:
    """If `guard` refuses `rowcount`, the transaction is rolled back here, on the thread, so
    that the write lock is let go at once, and the guard's refusal is raised."""
    if guard is not None and rowcount != guard[0]:
        connection.rollback()
        raise guard[1](rowcount)


def _run_deferred(connection: sqlite3.Connection, statement: HeldStatement) -> None:
    operation, parameters, many, guard = statement
    cursor = connection.cursor()
    try:
        _execute(cursor, operation, parameters, many)
        _check(connection, guard, cursor.rowcount)
    except sqlite3.Error as error:
        # SQLAlchemy names the statement whose trip raised; this one was sent before it.
        error.add_note(f"raised by a statement held back for this trip: {operation}")
        raise
    finally:
        cursor.close()


def _execute(cursor: sqlite3.Cursor, operation: str, parameters: Any, many: bool) -> None:
    if many:
        cursor.executemany(operation, parameters)
    elif parameters is None:
        cursor.execute(operation)
    else:
        cursor.execute(operation, parameters)


async def _nothing() -> None:
    return None


class _Line:
    """The one aiosqlite connection that the views of one engine's pool share
    (`OneTripConnection`), and who may queue trips on it.

    A trip that leaves no transaction open behind it (a whole transaction, the last trip of
    one, a read outside a transaction) is queued at once, unless a transaction is open on the
    line: it then waits until that one's last trip is queued (`alone`). A transaction's first
    trip, when more trips follow, takes the line (`own`); its last trip gives it back as it is
    queued (`last`), so that what waits is queued right behind it, not one answer later.

    A priority writer (the inbox's, on a connection of its own: see
    `store.db.priority_commit`) needs SQLite's write lock at once. While it has transactions
    to send (`prioritised`), no transaction that writes is queued here, and it waits only for
    the writes already open or queued (`writing`); reads go on, as WAL lets them.
    """

    __slots__ = (
        "_changed",
        "closed",
        "connection",
        "opened",
        "owner",
        "priority",
        "users",
        "waiting",
        "writing",
    )

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.connection = connection
        self.opened: asyncio.Future[aiosqlite.Connection] = asyncio.ensure_future(connection)
        """Done once the connection is open (awaiting an aiosqlite connection opens it)."""
        self.users = 0
        """Views open on it; the last one to close closes the connection."""
        self.closed = False
        self.owner: object | None = None
        """The view whose transaction holds the line, if any."""
        self.writing = 0
        """Trips queued and not yet answered that end a transaction (whole ones, last ones)."""
        self.priority = 0
        """Priority writers with transactions to send (`prioritised`)."""
        self.waiting = 0
        """Trips waiting for the line to be free, or to take it."""
        self._changed: list[asyncio.Future[None]] = []

    async def alone(self, function: Callable[..., Any], *args: Any, writes: bool) -> Any:
        """`function`'s trip, queued once no transaction is open on the line, and, if it
        `writes` (a whole transaction), once no priority writer has transactions to send."""
        if writes:
            await self._free_to_write()
            return await self._write(function, *args)
        if self.owner is not None:
            await self._until(lambda: self.owner is None)
        return await self.connection._execute(function, *args)

    async def own(self, view: object) -> None:
        """Hold the line for `view`'s transaction of several trips, until `last`."""
        await self._free_to_write()
        self.owner = view

    async def _free_to_write(self) -> None:
        """Until no transaction holds the line and no priority writer has some to send."""
        if self.owner is not None or self.priority:
            await self._until(lambda: self.owner is None and not self.priority)

    async def last(self, function: Callable[..., Any], *args: Any) -> Any:
        """The owning transaction's last trip: the line is let go as the trip is queued,
        in the same step, so nothing can be queued in between."""
        self.owner = None
        self._wake()
        return await self._write(function, *args)

    async def _write(self, function: Callable[..., Any], *args: Any) -> Any:
        self.writing += 1
        try:
            return await self.connection._execute(function, *args)
        finally:
            self.writing -= 1
            if not self.writing and self.priority:
                self._wake()

    def abandon(self, view: object) -> None:
        """`view` is dropped without a word (see `OneTripConnection.terminate`): if it holds
        the line, its transaction's ROLLBACK is queued now, before anything else can be,
        and the line is let go. Queued on aiosqlite's own queue with no one to answer, as
        SQLAlchemy's adapter queues its isolation level: no trip can be awaited here."""
        if self.owner is not view:
            return
        self.owner = None
        connection = self.connection
        if connection._connection is not None:
            connection._tx.put_nowait((None, connection._conn.rollback))
        self._wake()

    @contextlib.asynccontextmanager
    async def prioritised(self, patience: float) -> AsyncIterator[None]:
        """Around a priority writer's transactions: no write is queued here meanwhile, and
        they begin once the writes open or queued are done, or after `patience` seconds
        (a stuck transaction here: SQLite's busy handler then makes them take turns)."""
        self.priority += 1
        try:
            if self.owner is not None or self.writing:
                with contextlib.suppress(sqlite3.OperationalError):
                    await self._until(
                        lambda: self.owner is None and not self.writing, timeout=patience
                    )
            yield
        finally:
            self.priority -= 1
            if not self.priority:
                self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, []
        for waiter in changed:
            if not waiter.done():
                waiter.set_result(None)

    async def _until(self, ready: Callable[[], bool], timeout: float = LINE_TIMEOUT) -> None:
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    waiter = asyncio.get_running_loop().create_future()
                    self._changed.append(waiter)
                    await waiter
        except TimeoutError:
            raise sqlite3.OperationalError(
                f"database is locked: another transaction of this process held its "
                f"connection for {timeout:.0f} s"
            ) from None
        finally:
            self.waiting -= 1


class StatementAfterCommit(sqlite3.ProgrammingError):
    """A statement sent after the one that carried its transaction's COMMIT."""


class WriteWhileReading(sqlite3.ProgrammingError):
    """A statement other than a SELECT in a transaction declared read-only."""


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement is one trip to SQLite's thread. Nothing is held
    open between trips, so closing it costs none."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # Deliberately not the parent's __init__: that opens an aiosqlite cursor (a trip).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: _Description = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._trip(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        self._trip(operation, seq_of_parameters, many=True)

    def _trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        adapted = self._adapt_connection
        assert isinstance(adapted, OneTripConnection)
        if operation == BEGIN and not parameters and not many:
            adapted.begin_with_next_statement()
            return
        if adapted._read_only and operation.lstrip()[:6].upper() != "SELECT":
            raise WriteWhileReading(f"a read-only transaction may only read: {operation}")
        if adapted._committed:
            raise StatementAfterCommit(
                "the transaction was committed with its last statement; this one came after it"
            )
        held = adapted._defer_pending and not adapted._commit_pending
        adapted._defer_pending = False
        guard, adapted._guard = adapted._guard, None
        if held:
            adapted._deferred.append((operation, parameters, many, guard))
            # SQLAlchemy's async execute insists that the driver awaited something; this
            # completes at once, without a turn of the event loop.
            await_(_nothing())
            outcome = _NO_OUTCOME
        else:
            commit, adapted._commit_pending = adapted._commit_pending, False
            outcome = adapted._send(operation, parameters, many, commit=commit, guard=guard)
            if commit:
                adapted._committed = True
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """One of the pool's views of its engine's shared SQLite connection (`_Line`).

    Also sends a transaction's BEGIN IMMEDIATE along with its first statement rather than
    in a trip of its own; a transaction without a statement never reaches SQLite at all. When
    told (`commit_with_next_statement`), its COMMIT along with its last statement: the
    commit that follows is then done already. And when told (`defer_next_statement`), a
    statement whose outcome nobody reads waits for the next trip (a statement's or the
    COMMIT's) instead of taking one of its own."""

    __slots__ = (
        "_begin_pending",
        "_closed",
        "_commit_pending",
        "_committed",
        "_defer_pending",
        "_deferred",
        "_guard",
        "_line",
        "_read_only",
        "opened_line",
    )
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, line: _Line) -> None:
        super().__init__(dbapi, line.connection)  # type: ignore[arg-type]  # a protocol aiosqlite does not declare
        self._line = line
        line.users += 1
        self.opened_line = line.users == 1
        """The line's first view: the connection's own settings are made once, on it (setting
        one on another view could land in the middle of a transaction of the line's)."""
        self._closed = False
        self._begin_pending = False
        self._commit_pending = False
        self._committed = False
        self._defer_pending = False
        self._deferred: list[HeldStatement] = []
        self._read_only = False
        self._guard: _Guard | None = None

    def begin_with_next_statement(self) -> None:
        """BEGIN IMMEDIATE, sent in the trip of the transaction's first statement."""
        self._begin_pending = not self._read_only

    def read_only(self) -> None:
        """Until its end, this transaction only reads: no BEGIN is sent, so each SELECT is a
        consistent read of its own that takes no write lock, and its end (a rollback, or a
        commit) has nothing to send. Any other statement raises `WriteWhileReading`."""
        self._read_only = True
        self._begin_pending = False

    def commit_with_next_statement(self) -> None:
        """The next statement is the transaction's last: its trip commits after it. The
        caller commits right after it, with nothing in between (a statement in between raises
        `StatementAfterCommit`; the data before it is committed all the same)."""
        self._commit_pending = True

    def defer_next_statement(self) -> None:
        """The next statement's outcome (rows, rowcount, lastrowid) is not read when it is
        executed: it goes to SQLite's thread in the trip of the statement after it, or of the
        COMMIT, and reports no rows and a rowcount of -1. An error it raises is raised by that
        later trip, with a note naming it; a rollback drops it unsent. A statement that
        carries the COMMIT is never held back."""
        self._defer_pending = True

    def guard_next_statement(self, expect: int, refusal: Refusal) -> None:
        """The next statement must change `expect` rows. If it changes another number, its
        trip (its own, or the later one it is held back for) stops right after it, rolls the
        transaction back and raises `refusal(rowcount)`; a COMMIT it carries is not made."""
        self._guard = (expect, refusal)

    def _send(
        self,
        operation: str | None,
        parameters: Any,
        many: bool,
        *,
        commit: bool,
        guard: _Guard | None = None,
    ) -> _Outcome:
        """One trip to SQLite's thread: the pending BEGIN, the held-back statements, then
        `operation` (if any) and the COMMIT if `commit`.

        A trip that opens a transaction and does not end it takes the line first; the one
        that ends it gives the line back. Any other leaves nothing open behind it (a whole
        transaction, or a statement outside one) and only waits for the line to be free."""
        begin, self._begin_pending = self._begin_pending, False
        deferred, self._deferred = self._deferred, []
        line = self._line
        trip = (run_trip, line.connection._conn, operation, parameters, many, begin, commit)
        try:
            if line.owner is self:
                if commit:
                    outcome: _Outcome = await_(line.last(*trip, deferred, guard))
                else:
                    outcome = await_(line.connection._execute(*trip, deferred, guard))
            elif begin and not commit:
                await_(line.own(self))
                outcome = await_(line.connection._execute(*trip, deferred, guard))
            else:
                outcome = await_(line.alone(*trip, deferred, guard, writes=begin))
        except Exception as error:
            self._handle_exception(error)
        return outcome

    def commit(self) -> None:
        self._commit_pending = False
        self._defer_pending = False
        self._guard = None
        self._read_only = False
        if self._committed:  # with the last statement, which reported the end
            self._committed = False
            return
        if self._deferred or self._line.owner is self:  # held back, and the COMMIT: one trip
            self._send(None, None, False, commit=True)
        # Otherwise nothing was sent (a BEGIN still pending, or reads outside a
        # transaction): nothing to commit.
        self._begin_pending = False

    def rollback(self) -> None:
        self._begin_pending = False
        self._commit_pending = False
        self._committed = False
        self._defer_pending = False
        self._guard = None
        self._deferred = []
        self._read_only = False
        # Only a transaction that holds the line is open on SQLite: any other trip ended
        # its own (`run_trip`). The pool rolls back every connection it takes back, after a
        # commit too, and that costs no trip.
        if self._line.owner is self:
            try:
                await_(self._line.last(self._line.connection._conn.rollback))
            except Exception as error:
                self._handle_exception(error)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.rollback()
        finally:
            if self._leave():
                super().close()

    def terminate(self) -> None:
        """The pool drops a view it cannot trust (cancelled in the middle of a trip) or
        that was garbage collected. Its transaction, if it holds the line, is rolled back:
        queued at once, ahead of whatever waits for the line. The shared connection is
        stopped only with its last view."""
        if self._closed:
            return
        self._line.abandon(self)
        if self._leave():
            super().terminate()

    def _leave(self) -> bool:
        """Counts this view out of its line; whether it was the line's last."""
        self._closed = True
        self._line.users -= 1
        if self._line.users:
            return False
        self._line.closed = True
        return True


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """One per engine (SQLAlchemy's `create_engine` asks the dialect for one each time): its
    connections are views of one shared connection, its own or, with `shares`, that of
    another engine's DB-API. A priority writer's engine shares none: its connection is
    another SQLite connection on purpose."""

    def __init__(self, shares: OneTripDBAPI | None = None) -> None:
        super().__init__(aiosqlite, sqlite3)
        self._line: _Line | None = None
        self._shares = shares

    @property
    def line(self) -> _Line | None:
        """The shared connection, once one was opened."""
        return self._line if self._shares is None else self._shares.line

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        owner = self if self._shares is None else self._shares
        return OneTripConnection(self, owner._open(arg, kw))

    def _open(self, arg: tuple[Any, ...], kw: dict[str, Any]) -> _Line:
        line = self._line
        if line is None or line.closed:
            # Made and named before it is awaited: a pool opening several views at once
            # (a busy start) opens one connection, which all of them wait for.
            connection = self.aiosqlite.connect(*arg, **kw)
            # A daemon thread, as SQLAlchemy's adapter makes it (before aiosqlite 0.22 the
            # connection was the thread itself).
            getattr(connection, "_thread", connection).daemon = True
            line = self._line = _Line(connection)
        try:
            await_(asyncio.shield(line.opened))
        except Exception:
            if self._line is line:
                self._line = None  # the next view tries again
            raise
        return line


class OneTripDialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> OneTripDBAPI:  # type: ignore[override]
        return OneTripDBAPI()


registry.register(f"sqlite.{DRIVER}", __name__, "OneTripDialect")
