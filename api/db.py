"""The SQL record: async engine, the request-scoped unit of work, migrations (`make migrate`) and the check
that a worker's database is at them."""

from __future__ import annotations

import asyncio
import collections
import fcntl
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Protocol

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event, make_url, text
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
)
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.settings import sync_database_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The one-hop SQLite adapter below subclasses SQLAlchemy's aiosqlite adapter (private); it is installed on the
# release it was measured and tested on only, any other runs SQLAlchemy's own (tests/test_db_sqlite_hook.py).
SQLITE_HOOK_SQLALCHEMY = "2.1.9"


class _Row(Protocol):
    @property
    def id(self) -> int | None: ...


def saved_id(row: _Row) -> int:
    """The primary key of a row read from SQL or flushed (typed `int | None` because a new row has none yet)."""
    if row.id is None:
        raise ValueError(f"{type(row).__name__} has no id: it was never flushed")
    return row.id


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so several writers wait instead of failing."""
    if url.startswith("sqlite"):
        # hide_parameters: an SQL error in a log never carries the statement's values (customer text).
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        gate = SqliteWriteGate(wait_s=30.0)  # the engine's connections write one at a time, in arrival order

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - driver hook
            if type(dbapi_conn) is AsyncAdapt_aiosqlite_connection and sqlalchemy.__version__ == SQLITE_HOOK_SQLALCHEMY:
                dbapi_conn.__class__ = _OneHopSqliteConnection
                _WRITE_GATES[dbapi_conn._connection] = gate
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives the app crashing,
            # but the last ones can be lost if the machine loses power (the embedded demo's trade-off, README
            # "Benchmark: official account, safe mode"; production is PostgreSQL).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # application_name: the app's connections are told apart in pg_stat_activity (and by the tests that drop them).
    connect_args = {"application_name": "yunting"}
    engine = create_async_engine(url, pool_size=10, max_overflow=10, hide_parameters=True, connect_args=connect_args)
    _ping_when_idle(engine)
    return engine


# A pooled connection idle this long is pinged before use; one used more recently is trusted.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """`pool_pre_ping`, but only for a connection that sat idle (SQLAlchemy's checkout-event recipe).

    `pool_pre_ping` costs every checkout a round trip (psycopg: autocommit on, `;`, autocommit off), and a
    turn checks out twice: about a tenth of a turn's statements. A database restart is still noticed by the
    first checkout of each idle connection; a request that meets a connection dropped within its last
    second gets a 503 (api/errors.py, a disconnect) and the pool starts afresh, as SQLAlchemy invalidates it.
    """
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "connect")
    def _fresh(_dbapi_conn, record) -> None:  # pragma: no cover - driver hook
        record.info["yt_used_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _used(_dbapi_conn, record) -> None:  # pragma: no cover - driver hook
        if record is not None:
            record.info["yt_used_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy) -> None:
        if time.monotonic() - record.info.get("yt_used_at", 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:  # whatever the driver raises for a dead connection
            # The pool drops this connection and checks out another (a fresh one, if the server restarted).
            raise DisconnectionError("the pooled connection was dropped") from exc
        record.info["yt_used_at"] = time.monotonic()


class SqliteWriteGate:
    """This process's SQLite writers, one at a time and first come first served.

    SQLite has one writer per database; the others wait in its busy handler, which sleeps and retries (up to
    100 ms a try) instead of queueing: under 16 concurrent turns a writer could lose the race for a second
    while the lock was free most of that time (docs/benchmarks.md, "Round 3": the embedded p99). A
    connection takes the gate as its statement opens a write transaction and gives it back at the commit or
    rollback; the busy handler still arbitrates between processes. A wait past `wait_s` is SQLite's own
    "database is locked", as the busy timeout gave before.
    """

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.holder: object | None = None
        self._held: asyncio.Lock | None = None
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def enter(self, holder: object) -> None:
        lock = self._lock()
        try:
            async with asyncio.timeout(self.wait_s):
                await lock.acquire()
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked") from None
        self.holder, self._held = holder, lock

    def leave(self, holder: object) -> None:
        if self.holder is holder and self._held is not None:
            lock, self.holder, self._held = self._held, None, None
            lock.release()


# aiosqlite connection → its engine's write gate (set as the connection is made, gone with it)
_WRITE_GATES: weakref.WeakKeyDictionary[object, SqliteWriteGate] = weakref.WeakKeyDictionary()
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


def _in_transaction(driver) -> bool:
    return driver._connection is not None and driver._connection.in_transaction


def _opens_write(driver, operation: str) -> bool:
    """This statement will make sqlite3 begin a write transaction (it begins one before DML only)."""
    return operation.lstrip()[:6].upper() in _WRITES and not _in_transaction(driver)


class _OneHopSqliteCursor(AsyncAdapt_aiosqlite_cursor):
    """A statement in one trip to aiosqlite's thread: cursor, execute, fetch and close together.

    SQLAlchemy's adapter awaits each of those separately (3-4 hand-offs between the event loop and
    the connection's thread per statement, each a wake-up of both); the rows are fetched whole either
    way (no server-side cursors here), so the result is the same. Measured (docs/benchmarks.md, "What the
    profile found"): an answered official-account push went from ~45 hand-offs to ~10 on the embedded
    defaults. Private API of SQLAlchemy 2.1.9 and aiosqlite 0.22.1: `SQLITE_HOOK_SQLALCHEMY` gates it.
    """

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]  # no cursor kept: each statement opens and closes its own
        self._soft_closed_memoized = {}  # type: ignore[assignment]  # only read (SQLAlchemy's is an immutabledict)
        self._rows = collections.deque()
        self._description = None
        self._lastrowid = -1
        self._rowcount = -1

    @property
    def description(self):
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    def close(self) -> None:
        self._rows.clear()  # the driver's cursor closed in its thread already

    async def _async_soft_close(self) -> None:
        return None

    async def _execute_async(self, operation, parameters):
        return await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation, seq_of_parameters):
        return await self._run(operation, seq_of_parameters, many=True)

    async def _run(self, operation, parameters, *, many: bool):
        driver = self._connection

        def in_thread():
            cursor = driver._conn.cursor()
            try:
                if many:
                    cursor.executemany(operation, parameters)
                elif parameters is None:
                    cursor.execute(operation)
                else:
                    cursor.execute(operation, parameters)
                description = cursor.description
                rows = cursor.fetchall() if description else ()
                return description, rows, cursor.lastrowid, cursor.rowcount
            finally:
                cursor.close()

        gate = _WRITE_GATES.get(driver)
        if gate is not None and gate.holder is not driver and _opens_write(driver, operation):
            await gate.enter(driver)
        try:
            async with self._adapt_connection._execute_mutex:
                self._description, rows, self._lastrowid, self._rowcount = await driver._execute(in_thread)
        finally:
            if gate is not None and gate.holder is driver and not _in_transaction(driver):
                gate.leave(driver)  # the statement failed before its transaction began
        self._rows = collections.deque(rows)


class _OneHopSqliteConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite with one thread hop per statement, and none for a commit or rollback with nothing open.

    sqlite3's own commit() and rollback() do nothing outside a transaction; answering that on the
    event loop saves a hop (the pool rolls back every connection it gets back, mostly after a commit).
    """

    __slots__ = ()
    _cursor_cls = _OneHopSqliteCursor

    def _nothing_open(self) -> bool:
        return self._connection._connection is not None and not _in_transaction(self._connection)

    def rollback(self) -> None:
        try:
            if not self._nothing_open():
                super().rollback()
        finally:
            self._leave_gate()

    def commit(self) -> None:
        try:
            if not self._nothing_open():
                super().commit()
        finally:
            self._leave_gate()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._leave_gate()

    def terminate(self) -> None:
        try:
            super().terminate()
        finally:
            self._leave_gate()

    def _leave_gate(self) -> None:
        """The transaction ended (or the connection went): the next writer of this process may begin."""
        driver = self._connection
        gate = _WRITE_GATES.get(driver)
        if gate is not None and gate.holder is driver and not _in_transaction(driver):
            gate.leave(driver)


def alembic_config(async_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_database_url(async_url).replace("%", "%%"))
    return cfg


def migrate(async_url: str) -> None:
    """Apply Alembic migrations up to every head (synchronous; call before serving). Several workers starting
    at once take turns: PostgreSQL under an advisory lock (migrations/env.py), a SQLite file under a file lock."""
    with _sqlite_file_lock(async_url):
        command.upgrade(alembic_config(async_url), "heads")


class SchemaBehind(RuntimeError):
    """The database is not at the migrations this code expects: run `make migrate` first."""


def check_schema(async_url: str) -> None:
    """Refuse to serve on a database the migrations haven't reached (or that is ahead of this code)."""
    script = ScriptDirectory.from_config(alembic_config(async_url))
    expected = set(script.get_heads())
    engine = sa_create_engine(sync_database_url(async_url))
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    if current != expected:
        raise SchemaBehind(
            f"database schema is at {sorted(current) or 'nothing'}, this code expects {sorted(expected)}: "
            "run `make migrate` (or set YUNTING_MIGRATE_ON_START=true)"
        )


@contextmanager
def _sqlite_file_lock(async_url: str) -> Iterator[None]:
    url = make_url(async_url)
    if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
        yield
        return
    with open(f"{url.database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if this process dies
        yield


@asynccontextmanager
async def unit_of_work(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """One session per request: commit on success, roll back on error; services never commit."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def lock_for_write(session: AsyncSession) -> None:
    """On SQLite, take the write lock before the first read of a read-then-write unit of work.

    A deferred SQLite transaction that read, then tries to write after another connection committed,
    fails at once ("database is locked"): its snapshot is stale. A no-op write as the first statement
    waits for the lock instead (busy_timeout). PostgreSQL needs nothing of the kind.
    """
    assert session.bind is not None  # every session here is made with the engine (unit_of_work)
    if session.bind.dialect.name == "sqlite":
        await (await session.connection()).execute(text("UPDATE customer SET id = id WHERE 0"))
