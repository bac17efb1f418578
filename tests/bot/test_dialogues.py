"""Scripted dialogues through the real Rasa service and the app over HTTP: one per scenario kind."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, select

from api.conversations.models import Message
from api.settings import Settings, sync_database_url
from tests.support import (
    AgentConsole,
    MiniappCustomer,
    create_agent,
    new_person,
    oa_say,
)


@pytest.fixture
async def supervisor(app_url, database_url):
    username = "sup-" + uuid.uuid4().hex[:8]
    await create_agent(database_url, username=username, password="pw-123456", skills=["general"], role="supervisor")
    console = await AgentConsole.login(app_url, username, "pw-123456")
    yield console
    await console.aclose()


@pytest.fixture
async def customer(app_url, emulator):
    customer = await MiniappCustomer.login(app_url, emulator)
    yield customer
    await customer.aclose()


async def card_of(console: AgentConsole, conversation_id: int) -> dict:
    response = await console.http.get(f"/agents/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()["handoff_card"]


async def test_an_faq_is_answered_and_the_bot_keeps_the_conversation(customer):
    result = await customer.say("新办的卡怎么激活啊")
    assert result["conversation"]["state"] == "bot"
    assert "激活" in result["replies"][0]["text"] and len(result["replies"]) == 1


async def test_a_slot_given_up_front_is_confirmed_not_asked(customer, supervisor):
    result = await customer.say("我尾号4321的信用卡丢了")
    texts = " ".join(r["text"] for r in result["replies"])
    assert "信用卡还是借记卡" not in texts and "最后四位" not in texts
    assert "4321" in texts and "信用卡" in texts
    assert result["conversation"]["state"] == "queued"
    card = await card_of(supervisor, result["conversation"]["id"])
    assert card["intent"] == "report_loss" and card["slots"] == {"card_last4": "4321", "card_type": "credit"}
    assert card["skill_group"] == "cards" and card["channel_path"] == ["miniapp"]
    assert card["bot_said"] and "挂失" in card["summary"]


async def test_a_form_asks_only_for_what_is_missing_across_turns(customer):
    first = await customer.say("卡丢了要挂失")
    assert "信用卡还是借记卡" in first["replies"][0]["text"]
    second = await customer.say("储蓄卡")
    assert "最后四位" in second["replies"][0]["text"] and "借记卡" in second["replies"][0]["text"]
    third = await customer.say("尾号8899")
    assert third["conversation"]["state"] == "queued"
    assert "8899" in third["replies"][0]["text"]


async def test_an_urgent_complaint_goes_to_the_head_of_the_queue(customer, supervisor, app_url, emulator):
    waiting = await MiniappCustomer.login(app_url, emulator)
    await waiting.say("转人工")
    result = await customer.say("我要投诉，你们的服务太差了")
    assert result["conversation"]["state"] == "queued"
    queue = (await supervisor.http.get("/agents/queue", params={"all_groups": True})).json()
    general = [item for item in queue if item["skill_group"] == "general"]
    assert general[0]["conversation_id"] == result["conversation"]["id"]
    assert general[0]["priority"] > 0 and general[0]["reason"] == "complaint"
    await waiting.aclose()


async def test_a_video_scenario_escalates_to_video_with_a_one_tap_invitation(customer, supervisor):
    result = await customer.say("我想修改预留手机号")
    assert result["conversation"]["state"] == "queued"
    invite = next(r["payload"] for r in result["replies"] if r.get("payload"))
    assert invite["type"] == "video_invite" and invite["conversation_id"] == result["conversation"]["id"]
    assert "视频" in " ".join(r["text"] for r in result["replies"])
    card = await card_of(supervisor, result["conversation"]["id"])
    assert card["mode"] == "video" and card["skill_group"] == "accounts" and card["intent"] == "change_phone"


# Vague openings. Which of them a freshly trained model is unsure about varies (training isn't bit-for-bit
# reproducible: one model read 「帮我弄一下」 as deny at 0.68), so the bot's own record of the parse picks the
# opening the test plays; the policy's rule (unsure → one clarifying question → still unclear → a human) is
# what is checked.
VAGUE = ["帮我弄一下", "帮我看看", "有个事情", "弄一下"]


def parse_of(database_url: str, message_id: int) -> tuple[str | None, float | None]:
    engine = create_engine(sync_database_url(database_url))
    try:
        with engine.connect() as conn:
            row = conn.execute(select(Message.intent, Message.confidence).where(Message.id == message_id)).one()
            return row[0], row[1]
    finally:
        engine.dispose()


def unsure(database_url: str, sent: dict) -> bool:
    intent, confidence = parse_of(database_url, sent["message"]["id"])
    return intent == "nlu_fallback" or confidence is None or confidence < Settings().nlu_confidence_threshold


async def test_unclear_messages_get_one_clarifying_question_then_a_human(app_url, emulator, database_url, supervisor):
    for opening in VAGUE:
        customer = await MiniappCustomer.login(app_url, emulator)
        first = await customer.say(opening)
        if not unsure(database_url, first):
            await customer.aclose()
            continue
        assert first["conversation"]["state"] == "bot"
        assert "您是想办理" in first["replies"][0]["text"] or "换个说法" in first["replies"][0]["text"]
        second = await customer.say("就是那个嘛，你懂的")
        assert second["conversation"]["state"] == "queued"
        card = await card_of(supervisor, second["conversation"]["id"])
        assert card["reason"] == "low_confidence"
        await customer.aclose()
        return
    pytest.fail(f"the model was sure about every vague opening in {VAGUE}")


async def test_a_slot_given_on_the_official_account_is_not_asked_again_on_the_mini_program(
    app_url, emulator, emulator_url, supervisor
):
    person = new_person()
    pushed = oa_say(emulator_url, app_url, person, "我的储蓄卡丢了")
    assert "最后四位" in pushed["reply"]["Content"]  # the bot already knows it is a debit card
    customer = await MiniappCustomer.login(app_url, emulator, person)  # the same person, now in the mini-program
    result = await customer.say("挂失")
    texts = " ".join(r["text"] for r in result["replies"])
    assert "信用卡还是借记卡" not in texts and "借记卡" in texts and "最后四位" in texts
    done = await customer.say("尾号6688")
    assert done["conversation"]["state"] == "queued"
    card = await card_of(supervisor, done["conversation"]["id"])
    assert card["channel_path"] == ["wechat_oa", "miniapp"] and card["slots"]["card_type"] == "debit"
    assert "公众号 → 小程序" in card["summary"]
    await customer.aclose()
