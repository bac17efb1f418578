"""No session token in a URL: sockets and the video page take single-use tickets minted by an authenticated
POST; a token in the query is ignored; access log lines mask token, code and ticket values regardless."""

from __future__ import annotations

import asyncio
import logging

import httpx
import websockets
from uvicorn.logging import AccessFormatter

from api.masking import MaskingFilter


async def closed_with(url: str, wait_s: float = 20, **kwargs) -> int | None:
    """The close code when the server refuses the socket, None when it is a live socket (nothing in `wait_s`)."""
    async with websockets.connect(url, open_timeout=30, **kwargs) as ws:
        try:
            await asyncio.wait_for(ws.recv(), wait_s)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code
        except TimeoutError:
            return None
    return None


async def test_a_session_token_in_the_url_is_not_accepted(app_url, customer):
    base = app_url.replace("http://", "ws://")
    assert await closed_with(f"{base}/miniapp/ws?token={customer.token}") == 4401
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
        assert (await http.get("/miniapp/messages", params={"token": customer.token})).status_code == 401


async def test_a_socket_ticket_opens_the_socket_once(app_url, customer, agent):
    await customer.say("你好")
    base = app_url.replace("http://", "ws://")
    ticket = await customer.ticket("socket")
    async with websockets.connect(f"{base}/miniapp/ws?ticket={ticket}") as ws:
        event = await asyncio.wait_for(ws.recv(), 20)  # the replay: it is a live socket
        assert '"type": "message"' in event or '"type":"message"' in event
    assert await closed_with(f"{base}/miniapp/ws?ticket={ticket}") == 4401  # single use
    # A customer's ticket doesn't open the agents' inbox, and the reverse.
    assert await closed_with(f"{base}/agents/ws?ticket={await customer.ticket('socket')}") == 4401
    agent_ticket = (await agent.http.post("/agents/tickets")).json()["ticket"]
    assert await closed_with(f"{base}/miniapp/ws?ticket={agent_ticket}") == 4401
    agent_ticket = (await agent.http.post("/agents/tickets")).json()["ticket"]
    assert await closed_with(f"{base}/agents/ws?ticket={agent_ticket}", wait_s=3) is None
    # Clients that can set headers may still use the Authorization header.
    headers = {"Authorization": f"Bearer {customer.token}"}
    assert await closed_with(f"{base}/miniapp/ws?after_id=999999", wait_s=3, additional_headers=headers) is None


async def test_the_video_page_ticket_is_exchanged_once_for_a_session(app_url, customer):
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
        socket_ticket = await customer.ticket("socket")
        wrong = await http.post("/miniapp/tickets/redeem", json={"ticket": socket_ticket})
        assert wrong.status_code == 401  # a socket ticket is not a video page ticket
        ticket = await customer.ticket("video_page")
        session = await http.post("/miniapp/tickets/redeem", json={"ticket": ticket})
        assert session.status_code == 200 and session.json()["customer_id"] == customer.customer_id
        again = await http.post("/miniapp/tickets/redeem", json={"ticket": ticket})
        assert again.status_code == 401 and again.json()["error"]["code"] == "bad_ticket"
        token = session.json()["token"]
        assert (await http.get("/miniapp/messages", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_customer_sessions_last_hours_not_days(app_url, emulator):
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as http:
        login = await http.post("/miniapp/login", json={"code": emulator.wx_login("person-ttl")})
    assert login.status_code == 200 and login.json()["expires_in"] <= 24 * 3600


def test_access_log_lines_mask_token_code_and_ticket_values():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/miniapp/ws?token=abc.def&code=0a1b&after_id=3&ticket=t-123", "1.1", 101),
        None,
    )
    assert MaskingFilter().filter(record)
    line = AccessFormatter("%(message)s", use_colors=False).format(record)
    assert "abc.def" not in line and "0a1b" not in line and "t-123" not in line
    assert "token=***" in line and "code=***" in line and "ticket=***" in line and "after_id=3" in line
