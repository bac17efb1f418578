"""PostgreSQL drops the app's connections (a restart, a failover): no request gets a 500, none is lost, and the
app comes back without a person. Idle connections are pinged before use; a connection used within the last
second is trusted, and a request that meets a dropped one gets a 503 to retry."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from api.settings import sync_database_url
from tests.support import MiniappCustomer


def drop_app_connections(database_url: str) -> int:
    """Terminate the app's connections to this database, as a server restart would."""
    url = sync_database_url(database_url).replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'yunting'"
        ).fetchall()
    return len(rows)


async def say(customer: MiniappCustomer, text: str, msg_id: str) -> int:
    response = await customer.http.post("/miniapp/messages", json={"text": text, "client_msg_id": msg_id})
    assert response.status_code in (200, 503), response.text  # never a server error
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response.headers["Retry-After"] == "1"
    return response.status_code


async def test_dropped_database_connections_cost_no_server_error(database_url, app_url, emulator):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's connections: SQLite has none to drop")
    customer = await MiniappCustomer.login(app_url, emulator)
    try:
        await customer.say("你好")
        # Dropped right after use: the connection is trusted, the request may meet the broken one: a 503,
        # then the retry (same message id) goes through, once.
        assert drop_app_connections(database_url) > 0
        msg_id = uuid.uuid4().hex
        if await say(customer, "新卡怎么激活", msg_id) == 503:
            assert await say(customer, "新卡怎么激活", msg_id) == 200
        # Dropped while idle: the ping before use notices it, and the request doesn't.
        await asyncio.sleep(1.2)
        assert drop_app_connections(database_url) > 0
        await asyncio.sleep(1.2)
        assert await say(customer, "谢谢", uuid.uuid4().hex) == 200
        texts = [m["text"] for m in (await customer.history())["messages"] if m["direction"] == "in"]
        assert texts == ["你好", "新卡怎么激活", "谢谢"]
    finally:
        await customer.aclose()
