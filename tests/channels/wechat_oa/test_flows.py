"""The 5-second rule and WeChat's retries: a passive answer when it's ready in time, `success` and a
customer-service message when it isn't; a retried MsgId (or event) is processed and stored once."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.conversations import flows
from api.embedded import ThreadedServer
from tests.channels.wechat_oa.conftest import transcript
from tests.support import customer_row_reads


def customer_lines(messages) -> list[str]:
    return [m.text for m in messages if m.direction == "in"]


async def test_a_text_is_answered_passively_well_within_the_budget(wechat, db):
    person = await wechat.person()
    result = await person.say("你好")
    assert result["attempts"][0]["elapsed_s"] < 4.0
    assert "云厅智能客服" in person.reply_text(result)
    messages = await transcript(db, person.openid)
    assert [(m.direction, m.sender_kind, m.channel) for m in messages] == [
        ("in", "customer", "wechat_oa"),
        ("out", "bot", "wechat_oa"),
    ]
    assert messages[0].platform_msg_id == str(result["values"]["msg_id"])


async def test_a_first_contact_does_not_read_back_the_customer_it_just_created(wechat, db):
    """The customer linked on first sight is still in the push's session when its first conversation starts."""
    person = await wechat.person()
    with customer_row_reads() as reads:
        result = await person.say("你好")
    assert "云厅智能客服" in person.reply_text(result)
    messages = await transcript(db, person.openid)
    assert messages and [r for r in reads if messages[0].customer_id in r] == []


async def test_a_late_answer_is_success_now_and_a_customer_service_message_later(slow_wechat, db):
    person = await slow_wechat.person()
    result = await person.say("你好")
    assert result["body"] == "success" and result["reply"] is None
    [sent] = await slow_wechat.wait_sent(person.openid, 1)
    assert sent["body"]["msgtype"] == "text" and "云厅智能客服" in sent["body"]["text"]["content"]
    # "Typing…" went out while the answer was being prepared, inside WeChat's 30 s rule.
    typing = await slow_wechat.wait_sent(person.openid, 1, api="typing")
    assert [i["body"]["command"] for i in typing] == ["Typing"]
    await asyncio.sleep(0.3)
    assert len(await slow_wechat.sent(person.openid, "custom")) == 1  # once, not also passively
    assert [m.sender_kind for m in await transcript(db, person.openid)] == ["customer", "bot"]


async def test_concurrent_retries_of_one_msgid_are_processed_once(wechat, db):
    person = await wechat.person()
    xml, _values = person.xml("text__plain", content="我的信用卡丢了")
    # WeChat retries while the first try is still being processed: all three arrive together.
    results = await asyncio.gather(*(wechat.push(xml, tries=1) for _ in range(3)))
    assert all(r["status"] == 200 and r["error"] is None for r in results)
    answers = {r["reply"]["Content"] for r in results if r["reply"] is not None}
    assert len(answers) == 1 and "最后四位" in answers.pop()
    messages = await transcript(db, person.openid)
    assert customer_lines(messages) == ["我的信用卡丢了"]
    assert len([m for m in messages if m.sender_kind == "bot"]) == 1
    assert await wechat.sent(person.openid, "custom") == []


async def test_concurrent_retries_on_a_slow_answer_send_it_once(slow_wechat, db):
    person = await slow_wechat.person()
    xml, _ = person.xml("text__plain", content="你好")
    results = await asyncio.gather(*(slow_wechat.push(xml, tries=1) for _ in range(3)))
    assert [r["body"] for r in results] == ["success"] * 3
    await slow_wechat.wait_sent(person.openid, 1)
    await asyncio.sleep(0.5)  # the two duplicates finish too, and must send nothing
    assert len(await slow_wechat.sent(person.openid, "custom")) == 1
    assert len(await slow_wechat.sent(person.openid, "typing")) == 1  # once per interaction, not per try
    assert customer_lines(await transcript(db, person.openid)) == ["你好"]


async def test_a_retry_after_the_answer_gets_the_same_answer_and_nothing_new_is_stored(wechat, db):
    person = await wechat.person()
    xml, _ = person.xml("text__plain", content="你好")
    first = await wechat.push(xml)
    again = await wechat.push(xml)  # WeChat never saw the first answer, so it asks again
    assert again["reply"]["Content"] == first["reply"]["Content"]
    assert len(await transcript(db, person.openid)) == 2


async def test_pushes_the_app_does_not_answer_in_time_are_retried_by_wechat_and_processed_once(wechat, db, oa_server):
    forwarded: list[str] = []

    async def slow_link(request: Request) -> Response:
        # The network between WeChat and us is slow: each try reaches the app, the answer arrives too late.
        body = await request.body()
        async with httpx.AsyncClient() as http:
            answer = await http.post(oa_server, params=dict(request.query_params), content=body)
        forwarded.append(answer.text)
        await asyncio.sleep(1.0)
        return Response(answer.content, status_code=answer.status_code)

    proxy = ThreadedServer(Starlette(routes=[Route("/wechat/oa", slow_link, methods=["POST"])]))
    person = await wechat.person()
    xml, _ = person.xml("text__plain", content="你好")
    try:
        result = await wechat.push(xml, url=proxy.start() + "/wechat/oa", timeout_s=0.5, tries=3)
    finally:
        proxy.stop()
    assert [a["status"] for a in result["attempts"]] == [None, None, None] and len(forwarded) == 3
    assert customer_lines(await transcript(db, person.openid)) == ["你好"]
    assert len([m for m in await transcript(db, person.openid) if m.sender_kind == "bot"]) == 1


async def test_a_push_whose_answer_failed_is_answered_by_wechats_retry(wechat, db, monkeypatch):
    """The answer to a push cannot be written (a fault after the parse): the push fails and its message is kept;
    WeChat's retry of that MsgId (its try got no answer it could use) is answered then, once."""
    decide, faults = flows.decide, [RuntimeError("the answer's write fails")]

    def failing_once(context, parse, *args, **kwargs):
        if "账单多少钱" in parse.text and faults:
            raise faults.pop()
        return decide(context, parse, *args, **kwargs)

    monkeypatch.setattr(flows, "decide", failing_once)  # the app runs in this process (a threaded uvicorn)
    person = await wechat.person()
    xml, _ = person.xml("text__plain", content="信用卡账单多少钱")
    failed = await wechat.push(xml, tries=1)
    assert failed["status"] == 503 and not faults
    assert [(m.direction, m.text) for m in await transcript(db, person.openid)] == [("in", "信用卡账单多少钱")]
    retried = await wechat.push(xml, tries=1)
    assert "账单" in person.reply_text(retried), retried
    messages = await transcript(db, person.openid)
    assert customer_lines(messages) == ["信用卡账单多少钱"]
    assert len([m for m in messages if m.sender_kind == "bot"]) == 1


async def test_events_dedup_on_sender_and_create_time(wechat, db):
    person = await wechat.person()
    xml, _values = person.xml("event_subscribe__plain", create_time=1_700_000_123)
    first, retry = await wechat.push(xml), await wechat.push(xml)
    assert retry["reply"]["Content"] == first["reply"]["Content"]
    later, _ = person.xml("event_subscribe__plain", create_time=1_700_000_999)  # a new subscribe
    await wechat.push(later)
    messages = await transcript(db, person.openid)
    assert [m.text for m in messages if m.direction == "in"] == ["[关注公众号]", "[关注公众号]"]
    assert messages[0].platform_msg_id == f"event:{person.openid}:1700000123"
    assert len([m for m in messages if m.direction == "out"]) == 2
