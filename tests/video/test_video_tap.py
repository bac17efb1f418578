"""The 视频客服 tap on a conversation still with the bot: it escalates to video for the business under way,
and nobody tells the customer — already on the video page — to tap 视频客服."""

from __future__ import annotations

from tests.support import MiniappCustomer
from tests.video.support import request_call, video_agent


async def test_the_tap_escalates_without_telling_the_customer_to_tap_again(video_stack, emulator):
    stack = video_stack()
    cards = await video_agent(stack, skills=("cards",), presence="away")  # reads the queue only
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await customer.say("我的信用卡丢了")  # the bot is asking for the card's last four digits
    call = await request_call(customer, None)  # 「视频客服」 on the page
    history = await customer.history()
    assert history["conversation"]["state"] == "queued"
    tapped = next(m for m in history["messages"] if m["sender_kind"] == "customer" and m["text"] == "视频客服")
    answers = [m for m in history["messages"] if m["id"] > tapped["id"] and m["sender_kind"] == "bot"]
    assert answers, "the bot answered nothing"
    for message in answers:
        assert "视频客服」按钮" not in message["text"] and "点击" not in message["text"], message["text"]
        assert (message["payload"] or {}).get("type") != "video_invite"
    queue = (await cards.http.get("/agents/queue")).json()
    waiting = next(q for q in queue if q["conversation_id"] == call["conversation_id"])
    assert waiting["mode"] == "video" and waiting["skill_group"] == "cards"  # the loss report's group, by video
    for client in (cards, customer):
        await client.aclose()
