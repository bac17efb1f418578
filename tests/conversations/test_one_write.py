"""A text the bot answers is written with its answer, in one transaction after the parse: while Rasa works the
turn has written nothing and holds no SQL connection; an answer that cannot be written still leaves the message
stored alone, and its retry answers it, once."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

from api.conversations import flows
from api.embedded import ThreadedServer
from api.main import create_app
from tests.support import MiniappCustomer


async def test_while_rasa_works_nothing_is_written_and_no_sql_connection_is_held(settings_for, emulator):
    asked = asyncio.Event()

    async def silent_rasa(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"POST /model/parse"):
            asked.set()
        try:
            await reader.read()  # accepts every request and never answers: a hung Rasa
        finally:
            writer.close()

    rasa = await asyncio.start_server(silent_rasa, "127.0.0.1", 0)
    app = create_app(settings_for(rasa_url=f"http://127.0.0.1:{rasa.sockets[0].getsockname()[1]}", nlu_timeout_s=3))
    server = ThreadedServer(app)
    app_url = server.start()
    customer = await MiniappCustomer.login(app_url, emulator)
    try:
        said = asyncio.create_task(customer.say("我想问一下信用卡账单"))  # a first contact: no conversation yet
        asking = asyncio.ensure_future(asked.wait())
        async with asyncio.timeout(3):
            await asyncio.wait({asking, said}, return_when=asyncio.FIRST_COMPLETED)
        asking.cancel()  # not left pending when the turn ended first (the assertion says so)
        assert asked.is_set() and not said.done()
        # The turn waits for its parse holding no connection of the pool (a hung Rasa must not starve it) ...
        async with asyncio.timeout(1):  # its reads may still be running as the request reaches Rasa
            while app.state.engine.pool.checkedout():
                await asyncio.sleep(0.01)
        # ... and has written nothing: no conversation was started, no message stored.
        assert await customer.history() == {"conversation": None, "messages": [], "waiting": []}
        assert not said.done()

        result = await said  # the NLU timeout: the message, its polite answer and the hand-over, written together
        assert result["conversation"]["state"] == "queued"
        assert "暂时无法回答" in result["replies"][0]["text"]
        history = await customer.history()
        texts = [m["text"] for m in history["messages"]]
        assert texts[0] == "我想问一下信用卡账单" and texts[1:] == [r["text"] for r in result["replies"]]
        assert history["messages"][0]["created_at"] <= history["messages"][1]["created_at"]
    finally:
        await customer.aclose()
        server.stop()
        rasa.close()
        await rasa.wait_closed()


def failing_once(monkeypatch, marker: str) -> list[Exception]:
    """The policy fails once for a text with `marker`: a fault after the parse, before the answer is stored."""
    decide = flows.decide
    faults: list[Exception] = [RuntimeError("the answer's write fails")]

    def failing_decide(context, parse, *args, **kwargs):
        if marker in parse.text and faults:
            raise faults.pop()
        return decide(context, parse, *args, **kwargs)

    monkeypatch.setattr(flows, "decide", failing_decide)
    return faults


@asynccontextmanager
async def a_message_stored_alone(app_url: str, emulator, monkeypatch):
    """A customer (who said 你好 first) and a message whose answer failed: a 500, and the message stored alone
    (the last one of the history). Yields the customer, the opening turn, the text, its client id and the message."""
    marker = f"（故障{uuid.uuid4().hex[:6]}）"
    faults = failing_once(monkeypatch, marker)
    customer = await MiniappCustomer.login(app_url, emulator)
    try:
        opening = await customer.say("你好")
        text, client_msg_id = "信用卡账单多少钱" + marker, uuid.uuid4().hex
        # On a connection of its own: the server closes the one a 500 went out on.
        async with httpx.AsyncClient(base_url=app_url, headers=customer.http.headers) as http:
            failed = await http.post("/miniapp/messages", json={"text": text, "client_msg_id": client_msg_id})
        assert failed.status_code == 500 and not faults
        stored = (await customer.history())["messages"][-1]
        assert stored["text"] == text and stored["direction"] == "in"
        yield customer, opening, text, client_msg_id, stored
    finally:
        await customer.aclose()


async def test_an_answer_that_cannot_be_written_leaves_the_message_stored_and_its_retry_answers_it(
    app_url, emulator, monkeypatch
):
    async with a_message_stored_alone(app_url, emulator, monkeypatch) as (customer, opening, text, msg_id, stored):
        assert stored["conversation_id"] == opening["conversation"]["id"]
        retried = await customer.say(text, client_msg_id=msg_id)  # stored once; answered now, by the retry
        assert retried["message"]["id"] == stored["id"] and not retried["duplicate"]
        assert retried["replies"] and "账单" in retried["replies"][0]["text"], retried["replies"]
        again = await customer.say(text, client_msg_id=msg_id)  # and only once
        assert again["duplicate"] and [r["id"] for r in again["replies"]] == [r["id"] for r in retried["replies"]]
        messages = (await customer.history())["messages"]
        assert [m["text"] for m in messages].count(text) == 1
        assert [m["id"] for m in messages if m["direction"] == "out"][-len(retried["replies"]) :] == [
            r["id"] for r in retried["replies"]
        ]


async def test_copies_of_an_unanswered_message_at_once_answer_it_once(app_url, emulator, monkeypatch):
    """Retries of a message stored alone arrive together: one answers it, the copies that waited for its turn get
    that answer from the record."""
    async with a_message_stored_alone(app_url, emulator, monkeypatch) as (customer, _, text, msg_id, stored):
        copies = await asyncio.gather(*(customer.say(text, client_msg_id=msg_id) for _ in range(6)))
        assert {c["message"]["id"] for c in copies} == {stored["id"]}
        assert sum(not c["duplicate"] for c in copies) == 1
        answered = {tuple(r["id"] for r in c["replies"]) for c in copies}
        assert len(answered) == 1 and all(answered.pop())


async def test_an_unanswered_message_the_customer_has_moved_on_from_stays_unanswered(app_url, emulator, monkeypatch):
    """Once the customer said something else (and was answered), a late retry of the failed message is not answered
    out of order: it is the duplicate, as stored."""
    async with a_message_stored_alone(app_url, emulator, monkeypatch) as (customer, _, text, msg_id, stored):
        later = await customer.say("你好")
        assert later["replies"]
        retried = await customer.say(text, client_msg_id=msg_id)
        assert retried["duplicate"] and retried["message"]["id"] == stored["id"] and retried["replies"] == []
        assert (await customer.history())["messages"][-1]["id"] == later["replies"][-1]["id"]


async def test_a_bot_turn_writes_its_message_once_with_its_intent_and_the_conversation_with_it(app_url, emulator):
    """First contact: the conversation, the message (with its intent) and the reply, in that order; a later turn:
    the conversation's update, the message and the reply. No message is written twice (no UPDATE of it)."""
    customer = await MiniappCustomer.login(app_url, emulator)
    writes: list[str] = []

    def record(_conn, _cursor, statement: str, parameters, _context, _executemany) -> None:
        values = tuple(parameters.values()) if isinstance(parameters, dict) else tuple(parameters or ())
        words = [*statement.split(), "", "", ""]
        table = {"INSERT": words[2], "UPDATE": words[1]}.get(words[0])
        named = {customer.customer_id, *conversations}  # a write names the customer or their conversation
        if table in ("message", "conversation") and any(type(v) is int and v in named for v in values):
            writes.append(" ".join(words[:3]).replace(" INTO", "").replace(" SET", ""))
            confidences.append(next((v for v in values if isinstance(v, float) and 0 < v <= 1), None))

    conversations: list[int] = []
    confidences: list[float | None] = []  # the parse's confidence, among each write's values
    event.listen(Engine, "before_cursor_execute", record)
    try:
        first = await customer.say("信用卡账单多少钱")
        conversations.append(first["conversation"]["id"])
        first_writes, writes[:] = list(writes), []
        later = await customer.say("你好")
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        await customer.aclose()
    replies = ["INSERT message"] * len(first["replies"])
    assert first_writes[:2] == ["INSERT conversation", "INSERT message"] and first_writes[2:] == replies
    assert later["conversation"]["state"] == "bot"  # answered, not handed over: no escalation's writes
    assert writes == ["UPDATE conversation", "INSERT message"] + ["INSERT message"] * len(later["replies"]), writes
    assert "UPDATE message" not in first_writes + writes
    assert confidences[1] is not None and confidences[-len(writes) + 1] is not None  # each message with its parse
