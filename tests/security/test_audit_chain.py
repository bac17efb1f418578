"""The audit trail is tamper-evident: concurrent writers from several workers build one unbroken chain, and
the verifier names the first row edited, deleted or re-linked (and a recomputed chain by its noted head)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, select, text

from api.audit.chain import hash_of
from api.audit.models import AuditEvent, audit
from api.audit.verify import verify_chain
from api.db import create_engine as create_async_engine
from api.db import migrate, unit_of_work
from api.paths import ROOT
from api.settings import sync_database_url
from tests.conftest import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def chained_db(request, tmp_path, monkeypatch):
    """A migrated database of its own on each backend (PostgreSQL when YUNTING_TEST_DATABASE_URL is set)."""
    if request.param == "sqlite":
        monkeypatch.delenv("YUNTING_TEST_DATABASE_URL", raising=False)
    elif not os.environ.get("YUNTING_TEST_DATABASE_URL"):
        pytest.skip("PostgreSQL not configured (YUNTING_TEST_DATABASE_URL)")
    with fresh_database(tmp_path) as url:
        migrate(url)
        yield url


async def write_rows(url: str, *, workers: int = 3, per_worker: int = 12, rows_per_commit: int = 2) -> None:
    """Several engines (as several API processes would have) committing audit rows at the same moment."""
    engines = [create_async_engine(url) for _ in range(workers)]

    async def one(engine, worker: int, n: int) -> None:
        async with unit_of_work(engine) as session:
            for k in range(rows_per_commit):
                audit(
                    session,
                    actor_kind="agent",
                    actor_id=worker,
                    action="test_write",
                    subject=f"w{worker}:{n}:{k}",
                    note="客户 13800138000 的记录",
                    amount=12.5,
                )

    try:
        await asyncio.gather(*(one(e, w, n) for w, e in enumerate(engines) for n in range(per_worker)))
    finally:
        for engine in engines:
            await engine.dispose()


def sync_engine(url: str):
    return create_engine(sync_database_url(url))


async def test_concurrent_writers_build_one_intact_chain(chained_db):
    await write_rows(chained_db)
    engine = sync_engine(chained_db)
    verdict = verify_chain(engine)
    assert verdict.ok, verdict.describe()
    assert verdict.rows == 3 * 12 * 2 and verdict.head_seq == 72
    with engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text("SELECT chain_seq FROM audit_event ORDER BY chain_seq"))]
    assert seqs == list(range(1, 73))
    engine.dispose()


def _run_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "api.audit.verify", "--database-url", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_an_edited_row_is_named(chained_db):
    await write_rows(chained_db, workers=1, per_worker=5, rows_per_commit=1)
    engine = sync_engine(chained_db)
    with engine.begin() as conn:
        target = conn.execute(text("SELECT id FROM audit_event WHERE chain_seq = 3")).scalar()
        conn.execute(text("UPDATE audit_event SET subject = 'nothing to see' WHERE id = :id"), {"id": target})
    verdict = verify_chain(engine)
    assert not verdict.ok and verdict.broken_id == target and verdict.broken_seq == 3
    assert "changed" in verdict.reason
    result = _run_cli(chained_db)
    assert result.returncode == 1 and f"id={target} (seq 3)" in result.stderr
    engine.dispose()


async def test_a_deleted_row_is_named_by_the_gap(chained_db):
    await write_rows(chained_db, workers=1, per_worker=5, rows_per_commit=1)
    engine = sync_engine(chained_db)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE chain_seq = 2"))
        after = conn.execute(text("SELECT id FROM audit_event WHERE chain_seq = 3")).scalar()
    verdict = verify_chain(engine)
    assert not verdict.ok and verdict.broken_id == after and "missing" in verdict.reason
    engine.dispose()


async def test_a_recomputed_chain_is_caught_by_the_noted_head(chained_db):
    await write_rows(chained_db, workers=1, per_worker=4, rows_per_commit=1)
    engine = sync_engine(chained_db)
    intact = _run_cli(chained_db)
    assert intact.returncode == 0, intact.stderr
    head = verify_chain(engine)
    noted = f"{head.head_seq}:{head.head_hash}"
    assert f"seq={head.head_seq} hash={head.head_hash}" in intact.stdout
    # an attacker with write access edits row 2 and recomputes every later hash: the chain itself holds ...
    table = AuditEvent.__table__
    with engine.begin() as conn:
        conn.execute(table.update().where(table.c.chain_seq == 2).values(subject="rewritten"))
        rows = conn.execute(select(table).order_by(table.c.chain_seq)).all()
        prev = rows[0].row_hash
        for row in rows[1:]:
            new = hash_of(row, row.chain_seq, prev)
            conn.execute(table.update().where(table.c.id == row.id).values(prev_hash=prev, row_hash=new))
            prev = new
    assert verify_chain(engine).ok
    # ... but not against the head noted before
    result = _run_cli(chained_db, "--expect-head", noted)
    assert result.returncode == 1 and "recomputed" in result.stderr
    engine.dispose()


async def test_a_row_written_outside_the_chain_is_named(chained_db):
    await write_rows(chained_db, workers=1, per_worker=2, rows_per_commit=1)
    engine = sync_engine(chained_db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_event (actor_kind, actor_id, action, subject, detail, created_at) "
                "VALUES ('agent', 1, 'forged', 'x', '{}', CURRENT_TIMESTAMP)"
            )
        )
        forged = conn.execute(text("SELECT id FROM audit_event WHERE action = 'forged'")).scalar()
    verdict = verify_chain(engine)
    assert not verdict.ok and verdict.broken_id == forged and "outside the chain" in verdict.reason
    engine.dispose()
