"""Whole write transactions sent without SQLAlchemy's session, connection or execution
context: for the hot paths whose transaction is known in full before it starts (a turn's
start and outcome, a send's claim and record, a `/v1` thread's first rows and a response's
outcome). On SQLite each goes to the database's thread in one trip (`DirectWrites.of`); on
PostgreSQL, where each statement is a round trip to the server anyway, asyncpg sends them on a
connection of the engine's pool (`DirectWrites.on_postgresql`).

Measured in process on a file: a one-statement transaction through a session on the
one-trip driver cost about 350-410 µs of CPU, the same statement sent directly about
65-70 µs, SQLite's own work and the thread's hand-over included; a turn's outcome (one
reply, the counter, usage) 926 µs through `record_turn` and 311 µs sent directly
(`bench/direct.py`). What the session added was its bookkeeping, the pool's checkout and
checkin, and SQLAlchemy's execution context around each statement, not the SQL. No library
offers a cheaper way onto SQLAlchemy's Core statements: the statements stay SQLAlchemy's,
compiled once by its compiler for the engine's dialect (`Prepared`), and only their
execution is done here.

A transaction that depends on rows read first (the filer's status reports) reads them in a trip
of their own (`DirectWrites.read`) and guards its writes with what it read: if another
transaction changed them meanwhile, the guard refuses, nothing is kept, and the caller reads
again (`Stale`).

On PostgreSQL only the turns' and the sends' transactions go this way, whose statements and
guards are the same as through a session there. The filer keeps its session (its advisory
lock, and the reads inside its transaction), and so do `/v1` and the inbox, which have their
own ways. Measured with `parley worker` draining 10,000 webhooks on PostgreSQL
(`bench/ingest.py --no-bare --worker-after-load --bodies 10000`), three runs each: 22.9 ms of
the worker's CPU per turn through sessions, 19.2 ms this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import asyncpg
from sqlalchemy import CompoundSelect, Float, Numeric, Select, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

from parley.store import sqlite_driver
from parley.store.db import reading
from parley.store.pool import FairAsyncQueuePool

_UNBOUNDED = contextlib.nullcontext()
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A Core statement compiled once for a dialect, with the column keys it is given."""

    compiled: SQLCompiler
    defaults: tuple[tuple[str, Callable[[], Any]], ...]
    """Columns with a Python-side default the statement is not given a value for."""
    results: tuple[Callable[[Any], Any] | None, ...] = ()
    """How each column of its rows is converted from SQLite's value, as SQLAlchemy's result
    would (text to dates, JSON text to values)."""
    expanding: tuple[str, ...] | None = ()
    """The keys of its expanding parameters (IN lists); None: its parameters are not planned
    (`bind`), because some are rendered into the SQL or computed at each execution."""
    plans: dict[tuple[Any, ...], _Plan] = field(default_factory=dict)
    """`bind`'s plans, by the keys given and the lengths of the expanding values."""

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Dialect, keys: Sequence[str] | None) -> Prepared:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys or ()) or None)
        assert isinstance(compiled, SQLCompiler)
        defaults = tuple(
            (column.key, _default_of(column))
            for column in (*compiled.insert_prefetch, *compiled.update_prefetch)
        )
        columns = getattr(statement, "exported_columns", ())  # a SELECT's, or a RETURNING's
        results = tuple(_result_processor(column, dialect) for column in columns)
        plannable = not compiled.literal_execute_params and not any(
            parameter.callable is not None for parameter in compiled.binds.values()
        )
        expanding = tuple(sorted({p.key for p in compiled.post_compile_params}))
        return cls(compiled, defaults, results, expanding if plannable else None)

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """`raw` rows as SQLite's driver gave them, with the values converted (`results`)."""
        convert = self.results
        if not any(convert):
            return [tuple(row) for row in raw]
        return [
            tuple(
                value if f is None or value is None else f(value)
                for f, value in zip(convert, row, strict=True)
            )
            for row in raw
        ]

    def bind(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The SQL and its positional parameters for `values`, converted as SQLAlchemy would
        (dates to text, JSON to text, expanding IN lists expanded).

        SQLAlchemy builds both anew at each execution (`construct_expanded_state`): for a
        statement with IN lists it rewrites the SQL with a regular expression, and it was a
        quarter of the CPU of filing a batch of status reports. Here the first execution of
        each shape (the keys given, the lengths of the lists) is planned from SQLAlchemy's
        own answer for stand-ins of the values (`_Plan`), and later ones only put the values
        in their places."""
        if self.defaults:
            values = dict(values)
            for key, default in self.defaults:
                if key not in values:
                    values[key] = default()
        if self.expanding is None:
            return self._expanded(values)
        lists = {key: _listed(values[key]) for key in self.expanding if key in values}
        shape = (*values, *(len(found) for found in lists.values()))
        plan = self.plans.get(shape)
        if plan is None:
            plan = self._plan(values, lists, shape)
        return plan.sql, plan.parameters(values, lists)

    def _expanded(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """`bind`, as SQLAlchemy's execution context does it."""
        state = self.compiled.construct_expanded_state(values, escape_names=False)
        parameters = state.parameters
        # The expanded state holds the processors of expanded parameters only; the others'
        # are the compiled statement's, as SQLAlchemy's execution context takes them.
        processors = cast(Mapping[str, Callable[[Any], Any]], self.compiled._bind_processors)
        if state.processors:
            processors = {**processors, **state.processors}
        assert state.positiontup is not None  # SQLite's paramstyle is positional
        return state.statement, tuple(
            processors[name](parameters[name]) if name in processors else parameters[name]
            for name in state.positiontup
        )

    def _plan(
        self, values: Mapping[str, Any], lists: Mapping[str, list[Any]], shape: tuple[Any, ...]
    ) -> _Plan:
        """SQLAlchemy's SQL and positional parameters for stand-ins of `values`: each position
        then names the value (or list element) it takes, or holds a constant of the statement."""
        stand_ins: dict[str, Any] = {key: _Place(key) for key in values}
        for key, found in lists.items():
            stand_ins[key] = [
                tuple(_Place(key, (i, j)) for j in range(len(element)))
                if isinstance(element, tuple)
                else _Place(key, (i,))
                for i, element in enumerate(found)
            ]
        state = self.compiled.construct_expanded_state(stand_ins, escape_names=False)
        processors = cast(Mapping[str, Callable[[Any], Any]], self.compiled._bind_processors)
        processors = {**processors, **(state.processors or {})}
        assert state.positiontup is not None  # SQLite's paramstyle is positional
        places: list[tuple[_Place | None, Callable[[Any], Any] | None, Any]] = []
        for name in state.positiontup:
            value, process = state.parameters[name], processors.get(name)
            if isinstance(value, _Place):
                places.append((value, process, None))
            else:  # the statement's own value (a literal compared with)
                places.append((None, None, process(value) if process else value))
        if len(self.plans) >= _MOST_PLANS:
            self.plans.clear()
        plan = self.plans[shape] = _Plan(state.statement, tuple(places))
        return plan


def _result_processor(column: ColumnElement[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """How SQLAlchemy converts the column's values from the driver's. PostgreSQL's numeric
    types are converted by the type code of the row's description, which a direct read
    does not have: it is the one the column's type is created with."""
    kind = column.type
    coltype = None
    if dialect.name == "postgresql" and isinstance(kind, (Numeric, Float)):
        coltype = _FLOAT8 if isinstance(kind, Float) else _NUMERIC
    return kind.dialect_impl(dialect).result_processor(dialect, coltype)


_NUMERIC, _FLOAT8 = 1700, 701
"""PostgreSQL's type codes (pg_type oids) for `Numeric` and `Float` columns."""


_MOST_PLANS = 256
"""Plans kept for one statement (a batch's IN lists take many lengths): past it, forgotten."""


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a positional parameter's value comes from: the value given under `key`, or the
    element at `index` of it (an expanding list's; of a tuple in it)."""

    key: str
    index: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Plan:
    """A shape of execution's SQL, and each positional parameter's place and conversion (or
    constant)."""

    sql: str
    places: tuple[tuple[_Place | None, Callable[[Any], Any] | None, Any], ...]

    def parameters(
        self, values: Mapping[str, Any], lists: Mapping[str, list[Any]]
    ) -> tuple[Any, ...]:
        found = []
        for place, process, constant in self.places:
            if place is None:
                found.append(constant)
                continue
            if place.index:
                value = lists[place.key]
                for i in place.index:
                    value = value[i]
            else:
                value = values[place.key]
            found.append(process(value) if process is not None else value)
        return tuple(found)


def _listed(value: Any) -> list[Any]:
    """An expanding parameter's value as a list (a set's order kept for the whole call)."""
    return value if isinstance(value, list) else list(value)


def _default_of(column: Any) -> Callable[[], Any]:
    default = column.default
    if default is None or not (default.is_scalar or default.is_callable):
        raise ValueError(f"{column.key}: only scalar and callable defaults are filled here")
    if default.is_scalar:
        value = default.arg
        return lambda: value
    call = default.arg  # SQLAlchemy wraps a callable of no argument as one of a context
    return lambda: call(None)


Guard = tuple[int, sqlite_driver.Refusal]


class Stale(Exception):
    """Rows read before a direct transaction changed before it committed (a guard refused):
    nothing of the transaction was kept, and what it was made from must be read again."""


@dataclass(slots=True)
class Step:
    """One statement of a direct transaction: SQL, parameters (a sequence of them for an
    executemany) and the rowcount it must have, if any."""

    sql: str
    parameters: Any
    many: bool = False
    guard: Guard | None = None
    returns: bool = True
    """Whether it returns rows (a SELECT, a RETURNING): a guard then counts them."""


def step(prepared: Prepared, values: Mapping[str, Any], *, guard: Guard | None = None) -> Step:
    sql, parameters = prepared.bind(values)
    return Step(sql, parameters, guard=guard, returns=bool(prepared.results))


def many(prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> Step:
    """One statement for each of `rows` (all with the same keys and expansions)."""
    bound = [prepared.bind(row) for row in rows]
    return Step(bound[0][0], [parameters for _, parameters in bound], many=True)


class DirectWrites:
    """Sends whole write transactions, and reads outside a transaction, on an engine's
    connection without a session: SQLite's shared line (`of`), or asyncpg's own API on a
    connection of the engine's pool (`on_postgresql`)."""

    def __init__(self, line: _SqliteLine | _AsyncpgLine, dialect: Dialect) -> None:
        self._line = line
        self.dialect = dialect
        self._prepared: dict[object, Prepared] = {}

    @classmethod
    def of(cls, engine: AsyncEngine, *, bounded: bool = False) -> DirectWrites | None:
        """For `engine` on the one-trip SQLite driver; None on any other.

        `bounded`: each transaction takes a place in `engine`'s pool for its trip, so that
        it counts against the pool's size as a session's would. The channels' background
        keeps a pool of one, so that filing, turns and delivery go one at a time and leave
        the event loop to the webhook door's acknowledgements; unbounded, their direct
        transactions ran side by side and the door's p99 at 500 webhooks/s went from 19-23
        to 27-33 ms (`bench/ingest.py --rate 500`)."""
        dbapi = engine.sync_engine.dialect.dbapi
        if not isinstance(dbapi, sqlite_driver.OneTripDBAPI):
            return None
        pool = engine.sync_engine.pool if bounded else None
        assert pool is None or isinstance(pool, FairAsyncQueuePool)
        return cls(_SqliteLine(dbapi, pool), engine.sync_engine.dialect)

    @classmethod
    def on_postgresql(cls, engine: AsyncEngine) -> DirectWrites | None:
        """For `engine` on asyncpg; None on any other driver. Only for the transactions whose
        statements and guards are the same as through a session on PostgreSQL (a turn's start
        and outcome, a send's claim): what leans on SQLite's one writer at a time (the
        filer's reads before its transaction) keeps its session there."""
        if engine.dialect.driver != "asyncpg":
            return None
        return cls(_AsyncpgLine(engine), engine.sync_engine.dialect)

    def prepared(
        self, key: object, statement: Callable[[], ClauseElement], keys: Sequence[str] | None = None
    ) -> Prepared:
        """`statement()` compiled once under `key`, with the column keys `keys`."""
        found = self._prepared.get(key)
        if found is None:
            found = self._prepared[key] = Prepared.of(statement(), self.dialect, keys)
        return found

    @property
    def ready(self) -> bool:
        """Whether a transaction can be sent now: on SQLite, once the shared connection is
        open (a session has used the engine), and, if bounded, the pool's connections too (a
        place given back can then be waited for)."""
        return self._line.ready

    async def commit(self, steps: Sequence[Step], last: Step | None = None) -> list[Any]:
        """`steps`, then `last` (whose rows come back), in one transaction: on SQLite in one
        trip, the BEGIN, the statements and the COMMIT. A guard that refuses stops the
        transaction, rolls it back and raises its refusal; nothing of it is kept. The
        database's errors are raised as SQLAlchemy's (`IntegrityError` for a constraint the
        data breaks, `OperationalError` for a locked database…), as through a session."""
        return await self._line.commit(steps, last)

    async def read(self, prepared: Prepared, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of `prepared` for `values`, read outside any transaction (what is
        committed: SQLite's WAL lets it go beside a writer), converted as through a session
        (`Prepared.rows`)."""
        sql, parameters = prepared.bind(values)
        return prepared.rows(await self._line.read(sql, parameters))


class _SqliteLine:
    """Each transaction in one trip to the thread of SQLite's shared connection."""

    def __init__(
        self, dbapi: sqlite_driver.OneTripDBAPI, pool: FairAsyncQueuePool | None = None
    ) -> None:
        self._dbapi = dbapi
        self._pool = pool
        """Whose bound each transaction counts against, as a session's would (`of`)."""

    @property
    def ready(self) -> bool:
        line = self._dbapi.line
        return (
            line is not None
            and not line.closed
            and line.opened.done()
            and (self._pool is None or self._pool.opened)
        )

    async def commit(self, steps: Sequence[Step], last: Step | None) -> list[Any]:
        deferred = [(s.sql, s.parameters, s.many, s.guard) for s in steps]
        if last is None:
            return await self._trip(None, None, deferred=deferred)
        return await self._trip(
            last.sql, last.parameters, many=last.many, deferred=deferred, guard=last.guard
        )

    async def read(self, sql: str, parameters: Any) -> list[Any]:
        return await self._trip(sql, parameters, transaction=False)

    async def _trip(
        self,
        operation: str | None,
        parameters: Any,
        *,
        many: bool = False,
        deferred: Sequence[sqlite_driver.HeldStatement] = (),
        guard: Guard | None = None,
        transaction: bool = True,
    ) -> list[Any]:
        line = self._dbapi.line
        assert line is not None, "DirectWrites used before the engine's connection opened"
        try:
            async with self._pool.place() if self._pool is not None else _UNBOUNDED:
                outcome = await line.alone(
                    sqlite_driver.run_trip,
                    line.connection._conn,
                    operation,
                    parameters,
                    many,
                    transaction,
                    transaction,
                    deferred,
                    guard,
                    writes=transaction,
                )
        except sqlite3.Error as error:
            raise DBAPIError.instance(operation or "", parameters, error, sqlite3.Error) from error
        _description, rows, _rowcount, _lastrowid = outcome
        return list(rows)


class _AsyncpgLine:
    """Each transaction on a connection of the engine's pool (its checks of a rested
    connection included), its statements sent by asyncpg itself: a statement is still a round
    trip to the server, but without SQLAlchemy's session, greenlet hops and execution context
    around each. Measured with `parley worker` draining a burst on PostgreSQL (py-spy), those
    were 42 % of its CPU, against 21 % for asyncpg's own work."""

    ready = True

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def commit(self, steps: Sequence[Step], last: Step | None) -> list[Any]:
        async with self._connection() as (driver, running), driver.transaction():
            for running.step in steps:
                await _run(driver, running.step)
            running.step = last
            return [] if last is None else await _run(driver, last)

    async def read(self, sql: str, parameters: Any) -> list[Any]:
        async with self._connection() as (driver, running):
            running.step = Step(sql, parameters)
            return list(await driver.fetch(sql, *parameters))

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[tuple[Any, _Running]]:
        """asyncpg's connection, checked out of the engine's pool for the block. The
        database's errors are raised as SQLAlchemy's (a transaction in the block was rolled
        back), a guard's refusal as it is. A connection that failed otherwise (closed, or
        mid-statement when cancelled) is not given back to the pool."""
        async with self._engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            running = _Running()
            try:
                yield driver, running
            except BaseException as error:
                if driver.is_closed() or isinstance(error, _CONNECTION_LOST):
                    await connection.invalidate()
                if isinstance(error, asyncpg.PostgresError):
                    raise _translated(error, running) from error
                if isinstance(error, _CLIENT_ERRORS):
                    raise InterfaceError(*running.said(), error) from error
                raise


_CLIENT_ERRORS = (asyncpg.InterfaceError, asyncpg.InternalClientError)
"""asyncpg's own errors about the connection, raised as SQLAlchemy's `InterfaceError`. A
connection the server closed while idle can fail its next statement with either (the
protocol caught mid-state: "cannot switch to state 15; another operation is in progress")."""

_CONNECTION_LOST = (*_CLIENT_ERRORS, OSError, asyncio.CancelledError)
"""Errors after which a connection is not given back to the pool: it may be gone, or in the
middle of a statement (cancelled), even if asyncpg has not closed it."""


@dataclass(slots=True)
class _Running:
    """The statement a direct transaction on asyncpg is at, for the error it may raise."""

    step: Step | None = None

    def said(self) -> tuple[str, Any]:
        return (self.step.sql, self.step.parameters) if self.step else ("", None)


async def _run(driver: Any, statement: Step) -> list[Any]:
    """One statement of a transaction on asyncpg; its rows (none for an executemany). A
    guard that refuses raises its refusal, which rolls the transaction back."""
    sql, parameters, guard = statement.sql, statement.parameters, statement.guard
    if statement.many:
        await driver.executemany(sql, parameters)
        return []
    if guard is None or statement.returns:
        rows = list(await driver.fetch(sql, *parameters))
        count = len(rows)
    else:
        rows, status = [], await driver.execute(sql, *parameters)
        count = int(status.rpartition(" ")[2])  # "UPDATE 3", "INSERT 0 3", "DELETE 3"
    if guard is not None and count != guard[0]:
        raise guard[1](count)
    return rows


def _translated(error: Exception, running: _Running) -> DBAPIError:
    """asyncpg's error as SQLAlchemy's, by the classes SQLAlchemy's asyncpg dialect maps
    them to."""
    kind: type[DBAPIError] = DBAPIError
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        kind = IntegrityError
    elif isinstance(error, asyncpg.SyntaxOrAccessError):
        kind = ProgrammingError
    return kind(*running.said(), error)


class Reads:
    """Reads a caller repeats (delivery's polling), as plain rows: on SQLite's line without a
    session once `direct` is ready (`DirectWrites.read`), else through a reading session."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], direct: DirectWrites | None
    ) -> None:
        self._sessions = sessions
        self._direct = direct

    async def rows(
        self,
        key: object,
        statement: Callable[[], Select[Any] | CompoundSelect[Any]],
        values: Mapping[str, Any],
    ) -> list[tuple[Any, ...]]:
        """The rows of `statement()` (built once under `key` on SQLite) for `values`."""
        direct = self._direct
        if direct is not None and direct.ready:
            return await direct.read(direct.prepared(key, statement), values)
        async with reading(self._sessions) as session:
            connection = await session.connection()
            return [tuple(row) for row in await connection.execute(statement(), values)]


@dataclass(frozen=True, slots=True)
class Detached(Generic[T]):
    """A model's instances made from its columns read as plain values (`Reads.rows`), as a
    session would have loaded them and then closed: detached, every column loaded, no history.

    For the hot reads whose objects only go on to be read (a turn's conversation, parties and
    messages; a send's message and parties): loading them through a session cost its
    bookkeeping, the ORM's compile and loading steps and the identity map, for objects that
    leave the session as soon as it closes. Made here, an instance costs about 7 µs."""

    model: type[T]
    keys: tuple[str, ...]
    columns: tuple[ColumnElement[Any], ...]
    """The model's mapped columns, in `keys`' order: what a statement selects for it."""
    manager: Any
    """The model's class manager, which makes an instance with its state."""

    @classmethod
    def of(cls, model: type[T]) -> Detached[T]:
        mapper = inspect(model)
        attributes = mapper.column_attrs
        return cls(
            model,
            tuple(attribute.key for attribute in attributes),
            tuple(attribute.columns[0] for attribute in attributes),
            mapper.class_manager,
        )

    def load(self, row: Sequence[Any], start: int = 0) -> T:
        """The instance whose columns are `row[start:]`, in `columns`' order."""
        instance = cast(T, self.manager.new_instance())
        values = row[start : start + len(self.keys)]
        instance_state(instance).dict.update(zip(self.keys, values, strict=True))
        make_transient_to_detached(instance)
        return instance


def detached_in(row: Sequence[Any], *shapes: Detached[Any]) -> list[Any]:
    """The instances of `shapes`, whose columns follow each other in `row`, and the values of
    the columns after them."""
    found: list[Any] = []
    start = 0
    for shape in shapes:
        found.append(shape.load(row, start))
        start += len(shape.keys)
    return [*found, *row[start:]]
