"""The one private hook in api/db.py: the one-hop aiosqlite adapter and its write gate. These fail loudly when
SQLAlchemy or aiosqlite change under it (the app then quietly runs SQLAlchemy's own adapter, correct but slower)."""

from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite
import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from api.db import SQLITE_HOOK_SQLALCHEMY, SqliteWriteGate, _OneHopSqliteConnection, create_engine


def test_the_hook_is_measured_on_the_installed_sqlalchemy():
    assert sqlalchemy.__version__ == SQLITE_HOOK_SQLALCHEMY, (
        f"SQLAlchemy {sqlalchemy.__version__} is installed; api/db.py's one-hop adapter was built on "
        f"{SQLITE_HOOK_SQLALCHEMY}: check its overrides against the new adapter, then move the pin"
    )
    assert aiosqlite.__version__ == "0.22.1", "aiosqlite changed: check Connection._execute and ._conn"


async def test_one_trip_to_the_sqlite_thread_per_statement(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hook.db'}")
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            adapted = raw.dbapi_connection
            assert type(adapted) is _OneHopSqliteConnection, "the hook was not installed"
            driver = adapted._connection
            hops = []
            real_execute = driver._execute

            async def counted(fn, *args, **kwargs):
                hops.append(fn)
                return await real_execute(fn, *args, **kwargs)

            driver._execute = counted
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
            await conn.commit()
            hops.clear()
            result = await conn.execute(text("INSERT INTO t (name) VALUES (:n)"), [{"n": "甲"}, {"n": "乙"}])
            assert result.rowcount == 2
            rows = (await conn.execute(text("SELECT id, name FROM t ORDER BY id"))).all()
            assert [tuple(row) for row in rows] == [(1, "甲"), (2, "乙")]
            assert len(hops) == 2  # one per statement (BEGIN is implicit in sqlite3)
            await conn.commit()
            assert len(hops) == 3  # the commit, with a transaction open
            await conn.rollback()
            assert len(hops) == 3  # nothing open: answered without a hop
    finally:
        await engine.dispose()


async def test_writers_of_one_process_take_turns_in_arrival_order(tmp_path):
    """SQLite's own busy handler sleeps and retries, longer the longer a writer has waited: a writer arriving
    just as the lock is freed would win over one that waited all along. The write gate queues them."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    committed: list[str] = []
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))

        async def writer(name: str) -> None:
            async with engine.connect() as conn:
                await conn.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": name})
                await conn.commit()
                committed.append(name)

        async with engine.connect() as holder:
            await holder.execute(text("INSERT INTO t (name) VALUES ('first')"))
            early = asyncio.create_task(writer("waited long"))
            await asyncio.sleep(0.4)  # SQLite's handler would be sleeping 100 ms a try by now
            late = asyncio.create_task(writer("just arrived"))
            await asyncio.sleep(0.05)
            await holder.commit()
        async with asyncio.timeout(10):
            await asyncio.gather(early, late)
        assert committed == ["waited long", "just arrived"]
    finally:
        await engine.dispose()


async def test_a_failed_write_gives_the_gate_back(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
            await conn.execute(text("INSERT INTO t (name) VALUES ('甲')"))
        async with engine.connect() as conn:
            with pytest.raises(IntegrityError):
                await conn.execute(text("INSERT INTO t (name) VALUES ('甲')"))
            await conn.rollback()
        async with asyncio.timeout(5), engine.connect() as conn:  # not stuck behind the failed one
            await conn.execute(text("INSERT INTO t (name) VALUES ('乙')"))
            await conn.commit()
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO t (name) VALUES ('丙')"))
        async with asyncio.timeout(5), engine.connect() as conn:  # nor behind one closed without a commit
            await conn.execute(text("INSERT INTO t (name) VALUES ('丁')"))
            await conn.commit()
            names = (await conn.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
        assert names == ["甲", "乙", "丁"]
    finally:
        await engine.dispose()


async def test_a_writer_waits_for_the_gate_no_longer_than_its_bound():
    gate = SqliteWriteGate(wait_s=0.2)
    first, second = object(), object()
    await gate.enter(first)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        await gate.enter(second)
    gate.leave(second)  # not the holder: nothing happens
    assert gate.holder is first
    gate.leave(first)
    await gate.enter(second)
    assert gate.holder is second
