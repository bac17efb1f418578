"""The handoff card the agent API returns is the conversation as it is now (channel path, last messages,
details given since the escalation); the card taken at escalation is kept beside it as history."""

from __future__ import annotations

from tests.delivery.helpers import agent
from tests.support import MiniappCustomer, new_person, oa_say


async def test_the_card_follows_the_customer_after_the_escalation(isolated_stack, emulator, emulator_url):
    stack = isolated_stack()
    person = new_person()
    oa_say(emulator_url, stack.app_url, person, "我的信用卡丢了")
    oa_say(emulator_url, stack.app_url, person, "尾号4321")  # complete: handed to a person, nobody online
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)
    await customer.say("不好意思说错了，是尾号8765的卡")  # on the mini-program now, with a new detail
    conversation_id = (await customer.history())["conversation"]["id"]
    console = await agent(stack, skills=("cards",), presence=None)  # reads the queue, doesn't take it
    card = (await console.http.get(f"/agents/conversations/{conversation_id}")).json()["handoff_card"]
    assert card["channel_path"] == ["wechat_oa", "miniapp"]
    assert card["at_escalation"]["channel_path"] == ["wechat_oa"]
    said = [(m["channel"], m["text"]) for m in card["last_messages"] if m["sender_kind"] == "customer"]
    assert said[-1] == ("miniapp", "不好意思说错了，是尾号8765的卡")
    assert card["slots_changed"] == {"card_last4": {"before": "4321", "now": "8765"}}
    assert card["slots"]["card_last4"] == "8765" and card["at_escalation"]["slots"]["card_last4"] == "4321"
    assert "公众号 → 小程序" in card["summary"] and "8765" in card["summary"]
    for client in (console, customer):
        await client.aclose()
