"""The mini-program path end to end: real HTTP, the real Rasa service, Redis and SQL."""

from __future__ import annotations

import asyncio

import httpx

from tests.support import MiniappCustomer, customer_row_reads, new_person, next_message


async def test_login_then_message_gets_a_bot_answer_from_the_nlu(app_url, emulator):
    customer = await MiniappCustomer.login(app_url, emulator)
    result = await customer.say("我的信用卡丢了")
    assert result["conversation"]["state"] == "bot"
    assert result["message"]["sender_kind"] == "customer"
    [reply] = result["replies"]
    assert reply["sender_kind"] == "bot"
    # report_loss is a form: knowing the card type from "信用卡", the bot asks for the last four digits.
    assert "最后四位" in reply["text"]
    history = await customer.history()
    assert [m["sender_kind"] for m in history["messages"]] == ["customer", "bot"]
    await customer.aclose()


async def test_login_never_returns_the_session_key(app_url, emulator):
    code = emulator.wx_login(new_person())
    response = httpx.post(app_url + "/miniapp/login", json={"code": code})
    assert response.status_code == 200
    assert "session_key" not in response.text
    assert set(response.json()) == {"token", "customer_id", "expires_in"}


async def test_a_reused_login_code_is_refused_with_a_clear_error(app_url, emulator):
    code = emulator.wx_login(new_person())
    assert httpx.post(app_url + "/miniapp/login", json={"code": code}).status_code == 200
    again = httpx.post(app_url + "/miniapp/login", json={"code": code})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "wechat_code_used"
    unknown = httpx.post(app_url + "/miniapp/login", json={"code": "not-a-code"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "wechat_code_invalid"


async def test_the_same_person_is_one_customer_across_logins(app_url, emulator):
    person = new_person()
    first = await MiniappCustomer.login(app_url, emulator, person)
    second = await MiniappCustomer.login(app_url, emulator, person)
    assert first.customer_id == second.customer_id
    await first.aclose()
    await second.aclose()


async def test_one_customer_cannot_read_another_customers_conversation(app_url, emulator):
    alice = await MiniappCustomer.login(app_url, emulator)
    bob = await MiniappCustomer.login(app_url, emulator)
    sent = await alice.say("你好")
    conversation_id = sent["conversation"]["id"]
    own = await alice.http.get(f"/miniapp/conversations/{conversation_id}/messages")
    assert own.status_code == 200 and own.json()["messages"]
    stolen = await bob.http.get(f"/miniapp/conversations/{conversation_id}/messages")
    assert stolen.status_code == 404
    assert (await bob.history())["messages"] == []
    await alice.aclose()
    await bob.aclose()


async def test_a_retried_message_is_processed_once(app_url, emulator):
    customer = await MiniappCustomer.login(app_url, emulator)
    first, second = await asyncio.gather(
        customer.say("你好", client_msg_id="retry-0001"), customer.say("你好", client_msg_id="retry-0001")
    )
    assert first["message"]["id"] == second["message"]["id"]
    assert [r["id"] for r in first["replies"]] == [r["id"] for r in second["replies"]]
    assert sorted([first["duplicate"], second["duplicate"]]) == [False, True]
    history = await customer.history()
    assert len([m for m in history["messages"] if m["sender_kind"] == "customer"]) == 1
    await customer.aclose()


async def test_bad_inputs_get_clear_4xx_answers(app_url, emulator):
    customer = await MiniappCustomer.login(app_url, emulator)
    no_token = httpx.post(app_url + "/miniapp/messages", json={"text": "你好", "client_msg_id": "abcdefgh1"})
    assert no_token.status_code == 401
    forged = httpx.post(
        app_url + "/miniapp/messages",
        json={"text": "你好", "client_msg_id": "abcdefgh2"},
        headers={"Authorization": "Bearer " + customer.token[:-4] + "AAAA"},
    )
    assert forged.status_code == 401
    blank = await customer.http.post("/miniapp/messages", json={"text": "   ", "client_msg_id": "abcdefgh3"})
    assert blank.status_code == 422 and blank.json()["error"]["code"] == "invalid_request"
    malformed = await customer.http.post(
        "/miniapp/messages", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422
    huge = await customer.http.post(
        "/miniapp/messages", content=b"x" * 300_000, headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"
    await customer.aclose()


async def test_websocket_pushes_bot_replies_and_replays_what_was_missed(app_url, emulator):
    customer = await MiniappCustomer.login(app_url, emulator)
    async with customer.socket() as ws:
        sent = await customer.say("你好")
        pushed = await next_message(ws, predicate=lambda m: m["sender_kind"] == "bot")
        assert pushed["id"] == sent["replies"][0]["id"]
    async with customer.socket(after_id=0) as ws:
        replayed = [await next_message(ws), await next_message(ws)]
        assert [m["sender_kind"] for m in replayed] == ["customer", "bot"]
    await customer.aclose()


async def test_websocket_without_a_valid_token_is_closed(app_url):
    """Both live sockets (the customer's and the agent console's inbox), forged or missing tokens."""
    import websockets

    base = app_url.replace("http://", "ws://")
    for path in ("/miniapp/ws?token=forged.token", "/agents/ws?token=forged.token", "/agents/ws"):
        async with websockets.connect(base + path) as ws:
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd.code == 4401, path
            else:
                raise AssertionError(f"{path}: a forged token must not get a live socket")


async def test_many_customers_logging_in_at_once_all_get_in(app_url, emulator):
    codes = [emulator.wx_login(new_person()) for _ in range(12)]
    async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
        responses = await asyncio.gather(*(http.post("/miniapp/login", json={"code": code}) for code in codes))
    assert [r.status_code for r in responses] == [200] * 12
    assert len({r.json()["customer_id"] for r in responses}) == 12


async def test_a_valid_token_for_a_customer_who_no_longer_exists_is_refused(app_url):
    """The message path starts its parse once the token checks out, before the customer's row is read: a token
    whose customer is gone still gets a 401."""
    from api.security import issue_token

    token = issue_token(b"test-secret-" + b"x" * 32, kind="customer", subject=10**9, ttl_s=60)
    async with httpx.AsyncClient(base_url=app_url, headers={"Authorization": f"Bearer {token}"}) as http:
        sent = await http.post("/miniapp/messages", json={"text": "我的信用卡丢了", "client_msg_id": "gone-0001"})
        assert sent.status_code == 401 and sent.json()["error"]["message"] == "unknown customer", sent.text
        assert (await http.get("/miniapp/messages")).status_code == 401


async def test_a_later_turn_reads_no_customer_row_and_a_conversations_start_reads_it_once(app_url, emulator):
    """A conversation proves its customer: only its start reads the row (for the 401 above, and the context)."""
    customer = await MiniappCustomer.login(app_url, emulator)
    try:
        with customer_row_reads(customer.customer_id) as reads:
            first = await customer.say("你好")
        assert first["replies"] and len(reads) == 1, reads
        with customer_row_reads(customer.customer_id) as reads:
            later = await customer.say("信用卡账单多少钱")
        assert later["replies"] and later["conversation"]["id"] == first["conversation"]["id"]
        assert reads == []
    finally:
        await customer.aclose()
