"""Sign-in under attack: argon2 off the event loop, backoff then lockout per username (a supervisor unlocks),
limits per client address, and bogus wx.login codes kept from WeChat's jscode2session."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import httpx
from argon2 import PasswordHasher
from sqlalchemy import create_engine, text

from api.embedded import ThreadedServer
from api.main import create_app
from tests.hardening.conftest import PASSWORD
from tests.support import AgentConsole, create_agent

RELAXED = {
    "limit_agent_login_failures": "1000/minute",
    "limit_agent_login_lockout": "1000/hour",
}


def audit_actions(database_url: str, subject: str) -> list[str]:
    engine = create_engine(database_url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT action FROM audit_event WHERE subject = :s ORDER BY id"), {"s": subject})
            return [row[0] for row in rows]
    finally:
        engine.dispose()


async def test_thirty_wrong_logins_leave_other_requests_prompt(settings_for, database_url):
    """Measured against the machine itself: one sign-in's time alone is the yardstick. With argon2 on the event
    loop, a request sent during 30 sign-ins waited for one or more whole hashes; off the loop it doesn't."""
    server = ThreadedServer(create_app(settings_for(**RELAXED)))
    url = server.start()
    try:
        username = "storm-" + uuid.uuid4().hex[:8]
        await create_agent(database_url, username=username, password=PASSWORD, skills=["general"])
        # A costlier hash than the default, as a bank may configure: it makes the difference plain.
        set_password_hash(database_url, username, PasswordHasher(time_cost=8).hash(PASSWORD))
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            assert (await http.get("/video/notice")).status_code == 200  # warm
            started = time.monotonic()
            alone = await http.post("/agents/login", json={"username": username, "password": "wrong"})
            one_sign_in = time.monotonic() - started
            assert alone.status_code == 401
            logins = [
                asyncio.create_task(http.post("/agents/login", json={"username": username, "password": f"wrong-{i}"}))
                for i in range(30)
            ]
            await asyncio.sleep(0.2)  # the logins are in the server
            waits = []
            while not all(task.done() for task in logins):
                started = time.monotonic()
                assert (await http.get("/video/notice")).status_code == 200
                waits.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
            answers = await asyncio.gather(*logins)
        assert [r.status_code for r in answers] == [401] * 30
        assert len(waits) >= 3, "the logins finished before other requests were tried"
        assert statistics.median(waits) < one_sign_in / 2, (one_sign_in, waits)
    finally:
        server.stop()


def set_password_hash(database_url: str, username: str, password_hash: str) -> None:
    engine = create_engine(database_url.replace("+aiosqlite", ""))
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE agent SET password_hash = :h WHERE username = :u"), {"h": password_hash, "u": username}
            )
    finally:
        engine.dispose()


async def test_wrong_passwords_back_off_then_lock_until_a_supervisor_unlocks(isolated_stack, emulator):
    # Two workers of one deployment, one tuned to show the backoff and one the lockout (windows of minutes and
    # hours: a loaded machine can't make them pass by accident).
    stack = isolated_stack(limit_agent_login_failures="3/minute", limit_agent_login_lockout="100/hour")
    locking = isolated_stack.add_worker(
        stack, limit_agent_login_failures="100/minute", limit_agent_login_lockout="3/hour"
    )
    slowed, username = "slowed-" + uuid.uuid4().hex[:8], "target-" + uuid.uuid4().hex[:8]
    await create_agent(stack.database_url, username=slowed, password=PASSWORD, skills=["general"])
    agent_id = await create_agent(stack.database_url, username=username, password=PASSWORD, skills=["general"])
    boss = "boss-" + uuid.uuid4().hex[:8]
    await create_agent(stack.database_url, username=boss, password=PASSWORD, skills=["general"], role="supervisor")
    supervisor = await AgentConsole.login(locking, boss, PASSWORD)
    peer = "peer-" + uuid.uuid4().hex[:8]
    await create_agent(stack.database_url, username=peer, password=PASSWORD, skills=["general"])
    colleague = await AgentConsole.login(locking, peer, PASSWORD)

    async with httpx.AsyncClient(timeout=60) as http:

        async def attempt(base: str, name: str, password: str) -> httpx.Response:
            return await http.post(base + "/agents/login", json={"username": name, "password": password})

        assert [(await attempt(stack.app_url, slowed, "wrong")).status_code for _ in range(3)] == [401] * 3
        backoff = await attempt(stack.app_url, slowed, PASSWORD)  # even the right password waits now
        assert backoff.status_code == 429, backoff.text
        assert backoff.json()["error"]["code"] == "login_backoff"
        assert 1 <= int(backoff.headers["Retry-After"]) <= 60

        assert [(await attempt(locking, username, "wrong")).status_code for _ in range(3)] == [401] * 3
        locked = await attempt(locking, username, PASSWORD)  # the third wrong password locked it
        assert locked.status_code == 403 and locked.json()["error"]["code"] == "account_locked", locked.text
        assert (await attempt(stack.app_url, username, PASSWORD)).status_code == 403  # on every worker (SQL)
        overview = (await supervisor.http.get("/supervisor/overview")).json()
        assert next(a for a in overview["agents"] if a["id"] == agent_id)["locked"] is True

        refused = await colleague.http.post(f"/supervisor/agents/{agent_id}/unlock")
        assert refused.status_code == 403
        unlocked = await supervisor.http.post(f"/supervisor/agents/{agent_id}/unlock")
        assert unlocked.status_code == 200, unlocked.text
        assert (await attempt(locking, username, PASSWORD)).status_code == 200

    actions = audit_actions(stack.database_url, f"agent:{agent_id}")
    assert actions.count("agent_login_failed") == 3
    assert "agent_locked" in actions and "agent_unlock" in actions and actions[-1] == "agent_login"
    await supervisor.aclose()
    await colleague.aclose()


async def test_thirty_wrong_passwords_then_the_right_one_is_not_let_in(isolated_stack):
    """The issue's attack with the default limits: no slowdown before, 200 at the end."""
    stack = isolated_stack(limit_agent_login_per_client="30/minute")
    username = "victim-" + uuid.uuid4().hex[:8]
    await create_agent(stack.database_url, username=username, password=PASSWORD, skills=["general"])
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as http:
        codes = []
        for _ in range(30):
            response = await http.post("/agents/login", json={"username": username, "password": "guess"})
            codes.append(response.status_code)
        final = await http.post("/agents/login", json={"username": username, "password": PASSWORD})
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    assert final.status_code == 429 and "Retry-After" in final.headers


async def test_bogus_wx_login_codes_stop_reaching_wechat(isolated_stack, emulator):
    stack = isolated_stack(
        limit_miniapp_login_failures_per_client="5/10 minutes", limit_miniapp_login_per_client="100/minute"
    )
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as http:
        answers = [await http.post("/miniapp/login", json={"code": "bogus-" + uuid.uuid4().hex}) for _ in range(30)]
        # The first five went to jscode2session (WeChat's own "invalid code"); the rest never left the API.
        assert [r.json()["error"]["code"] for r in answers[:5]] == ["wechat_code_invalid"] * 5
        assert {r.status_code for r in answers[5:]} == {429}
        refused = answers[-1]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "请稍后再试" in refused.json()["error"]["message"] and int(refused.headers["Retry-After"]) >= 1
        # A real code from the same address is refused too until the window passes (the address is the key).
        real = await http.post("/miniapp/login", json={"code": emulator.wx_login("person-" + uuid.uuid4().hex[:8])})
        assert real.status_code == 429
