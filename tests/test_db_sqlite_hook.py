"""The one private hook in api/db.py: the one-hop aiosqlite adapter. These fail loudly when SQLAlchemy or
aiosqlite change under it (the app then quietly runs SQLAlchemy's own adapter, correct but slower)."""

from __future__ import annotations

import aiosqlite
import sqlalchemy
from sqlalchemy import text

from api.db import SQLITE_HOOK_SQLALCHEMY, _OneHopSqliteConnection, create_engine


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
