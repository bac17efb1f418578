"""Several API workers start at once on a fresh database: each applies the migrations, taking turns
(PostgreSQL: an advisory lock; a SQLite file: a file lock), so all of them start."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import create_engine, inspect

from api.settings import sync_database_url
from tests.conftest import fresh_database

MIGRATE = "import sys; from api.db import migrate; migrate(sys.argv[1])"


def test_workers_migrating_a_fresh_database_at_once_all_succeed(tmp_path):
    with fresh_database(tmp_path) as url:
        workers = [
            subprocess.Popen([sys.executable, "-c", MIGRATE, url], stderr=subprocess.PIPE, text=True) for _ in range(3)
        ]
        results = [(worker.wait(timeout=120), worker.stderr.read()) for worker in workers]
        assert [code for code, _ in results] == [0, 0, 0], [err[-400:] for code, err in results if code]
        engine = create_engine(sync_database_url(url))
        try:
            assert {"conversation", "video_call", "agent"} <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
