"""The SQL record: async engine, the request-scoped unit of work, and migrations at start."""

from __future__ import annotations

import fcntl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.settings import sync_database_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so several writers wait instead of failing."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - driver hook
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


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
    if session.bind.dialect.name == "sqlite":
        await session.exec(text("UPDATE customer SET id = id WHERE 0"))
