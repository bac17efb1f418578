"""Outbound on the official account: agent replies by customer-service message within WeChat's quota; what
can't go is kept pending and delivered at the next interaction (or seen on the mini-program) — never dropped;
the same person on the official account and the mini-program is one customer in one conversation."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.channels.wechat_oa.conftest import conversation_of, identity_of, pending_of, transcript
from tests.support import AgentConsole, MiniappCustomer, create_agent, next_message


@pytest.fixture
async def agent(app_url, database_url):
    username = "oa-agent-" + uuid.uuid4().hex[:8]
    await create_agent(
        database_url, username=username, password="s3cret-pass", skills=["general", "cards"], capacity=50
    )
    console = await AgentConsole.login(app_url, username, "s3cret-pass")
    yield console
    await console.aclose()


async def queued_on_oa(person, db) -> int:
    """The person asks for a human on the official account; returns the queued conversation's id."""
    result = await person.say("转人工")
    assert "队列" in person.reply_text(result)  # the bot's answer and the queue notice, in one passive reply
    return (await transcript(db, person.openid))[0].conversation_id


async def test_an_agent_reply_reaches_the_official_account_by_customer_service_message(wechat, db, agent):
    person = await wechat.person()
    conversation_id = await queued_on_oa(person, db)
    assert (await agent.http.post(f"/agents/conversations/{conversation_id}/claim")).status_code == 200
    sent = await agent.http.post(
        f"/agents/conversations/{conversation_id}/messages", json={"text": "您好，我是客服小王。"}
    )
    assert sent.status_code == 200
    greeting, reply = await wechat.wait_sent(person.openid, 2)
    assert "已接入" in greeting["body"]["text"]["content"]
    assert reply["body"] == {"touser": person.openid, "msgtype": "text", "text": {"content": "您好，我是客服小王。"}}


async def test_the_sixth_message_in_48h_waits_for_the_next_interaction(wechat, db, agent):
    person = await wechat.person()
    conversation_id = await queued_on_oa(person, db)
    await agent.http.post(f"/agents/conversations/{conversation_id}/claim")  # the greeting: 1 of 5
    for n in range(1, 6):
        await agent.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": f"第{n}条"})
    sent = await wechat.wait_sent(person.openid, 5)
    assert [s["body"]["text"]["content"] for s in sent[1:]] == ["第1条", "第2条", "第3条", "第4条"]
    customer_id = (await identity_of(db, person.openid)).customer_id
    [waiting] = await pending_of(db, customer_id)
    assert (waiting.status, waiting.reason) == ("pending", "quota")
    assert len(await wechat.sent(person.openid, "custom")) == 5  # we never asked WeChat for a sixth

    result = await person.say("还在吗？")  # the customer's next message opens a new window
    assert result["body"] == "success"  # with an agent, the bot stays quiet
    sent = await wechat.wait_sent(person.openid, 6)
    assert sent[5]["body"]["text"]["content"] == "第5条"
    [delivered] = await pending_of(db, customer_id)
    assert delivered.status == "sent" and delivered.delivered_at is not None


async def test_wechat_refusals_are_kept_pending_too(wechat, db, agent, emulator_url):
    import httpx

    person = await wechat.person()
    conversation_id = await queued_on_oa(person, db)
    await agent.http.post(f"/agents/conversations/{conversation_id}/claim")
    await wechat.wait_sent(person.openid, 1)
    # WeChat says the window is over (45015) although we counted one open.
    httpx.post(emulator_url + "/_sim/faults", json={"path": "/cgi-bin/message/custom/send", "errcode": 45015})
    await agent.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": "请提供身份证后四位"})
    customer_id = (await identity_of(db, person.openid)).customer_id
    [waiting] = await pending_of(db, customer_id)
    assert (waiting.status, waiting.reason) == ("pending", "45015")
    await person.say("好的")
    sent = await wechat.wait_sent(person.openid, 2)
    assert sent[1]["body"]["text"]["content"] == "请提供身份证后四位"


async def test_an_unsubscribed_customer_gets_the_message_when_they_come_back(wechat, db, agent):
    person = await wechat.person()
    conversation_id = await queued_on_oa(person, db)
    await agent.http.post(f"/agents/conversations/{conversation_id}/claim")
    await wechat.wait_sent(person.openid, 1)
    await person.send("event_unsubscribe__plain", create_time=1_800_000_000)
    await agent.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": "您的卡已挂失"})
    customer_id = (await identity_of(db, person.openid)).customer_id
    [waiting] = await pending_of(db, customer_id)
    assert (waiting.status, waiting.reason) == ("pending", "unreachable")
    await person.send("event_subscribe__plain", create_time=1_800_000_060)  # back: 3 messages within a minute
    sent = await wechat.wait_sent(person.openid, 2)
    assert sent[1]["body"]["text"]["content"] == "您的卡已挂失"


async def wait_read(agent, conversation_id: int, message_id: int) -> None:
    for _ in range(100):
        view = (await agent.http.get(f"/agents/conversations/{conversation_id}")).json()
        if next(m for m in view["messages"] if m["id"] == message_id)["delivery"]["state"] == "read":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"message {message_id} was never confirmed as read")


async def test_a_customer_on_the_mini_program_sees_what_the_official_account_could_not_take(
    wechat, db, agent, app_url, emulator
):
    person = await wechat.person()
    conversation_id = await queued_on_oa(person, db)
    miniapp = await MiniappCustomer.login(app_url, emulator, person.name)
    await agent.http.post(f"/agents/conversations/{conversation_id}/claim")
    for n in range(1, 5):
        await agent.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": f"第{n}条"})
    await wechat.wait_sent(person.openid, 5)  # the window's five are used up
    last_id = (await transcript(db, person.openid))[-1].id
    async with miniapp.socket(after_id=last_id) as ws:  # the mini-program chat is open
        await agent.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": "请看小程序"})
        pushed = await next_message(ws, predicate=lambda m: m["sender_kind"] == "agent")
        assert pushed["text"] == "请看小程序"
        # The page says it showed it (api/delivery): the official account has nothing to make up for.
        await ws.send(json.dumps({"type": "receipt", "status": "read", "message_ids": [pushed["id"]]}))
        await wait_read(agent, conversation_id, pushed["id"])
    assert await pending_of(db, miniapp.customer_id) == []
    await person.say("收到")
    assert len(await wechat.sent(person.openid, "custom")) == 5  # not sent a second time
    await miniapp.aclose()


async def test_one_person_on_the_official_account_then_the_mini_program_is_one_customer_and_conversation(
    wechat, db, app_url, emulator
):
    person = await wechat.person()
    first = await person.say("我的储蓄卡丢了")
    assert "最后四位" in person.reply_text(first)
    oa_customer = (await identity_of(db, person.openid)).customer_id
    miniapp = await MiniappCustomer.login(app_url, emulator, person.name)
    assert miniapp.customer_id == oa_customer  # joined by the unionid from /cgi-bin/user/info
    second = await miniapp.say("尾号6688")
    texts = " ".join(r["text"] for r in second["replies"])
    # The bot remembers the debit card from the official account: it doesn't ask again.
    assert "6688" in texts and "借记卡" in texts and "信用卡还是借记卡" not in texts
    conversation = await conversation_of(db, second["conversation"]["id"])
    assert conversation.channel_path == ["wechat_oa", "miniapp"] and conversation.current_channel == "miniapp"
    history = await miniapp.history()
    assert [m["text"] for m in history["messages"] if m["sender_kind"] == "customer"] == ["我的储蓄卡丢了", "尾号6688"]
    assert {m["channel"] for m in history["messages"]} == {"wechat_oa", "miniapp"}
    await miniapp.aclose()
