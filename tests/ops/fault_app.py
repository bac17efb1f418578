"""The real app plus two routes that fail on purpose, for the logging test's uvicorn process (the failures are
the stimulus; the logging under test is the app's own)."""

from __future__ import annotations

import logging

from fastapi import Request
from sqlalchemy import text

from api.main import create_app as create_real_app

log = logging.getLogger("api.test_fault")


def create_app():
    app = create_real_app()

    @app.get("/test-fault/exception")
    async def exception() -> None:
        log.info("customer paid with card %s", "6222021234567890123")
        raise RuntimeError("customer 13812345678 wrote: my ID is 110101199003071234")

    @app.post("/test-fault/sql")
    async def sql(request: Request) -> None:
        said = (await request.json())["text"]  # customer text, as a message would bring it
        async with request.app.state.engine.connect() as conn:
            # A table that isn't there fails on SQLite and PostgreSQL alike (SQLite casts any text to 0).
            await conn.execute(text("SELECT CAST(:value AS INTEGER) FROM no_such_table"), {"value": said})

    return app
