"""The bot offers a booking when nobody is online (or the wait is long); the official account's menu item
预约客户经理 answers with a mini-program link to the booking page."""

from __future__ import annotations

import httpx

from api.settings import DEV_OA_TOKEN
from tests.advisors.support import agent
from tests.support import MiniappCustomer, new_person


async def test_the_bot_offers_a_booking_when_nobody_is_online(isolated_stack, emulator):
    stack = isolated_stack()
    _, offline = await agent(stack, name="offline", online=False)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    replies = (await customer.say("转人工"))["replies"]
    offers = [r for r in replies if (r.get("payload") or {}).get("type") == "booking_invite"]
    assert len(offers) == 1 and "没有客服在线" in offers[0]["text"]
    assert offers[0]["payload"]["miniapp_path"] == "pages/booking/booking"
    await customer.aclose()
    await offline.aclose()


async def test_no_offer_when_an_agent_is_free(isolated_stack, emulator):
    stack = isolated_stack()
    _, online = await agent(stack, name="online")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    replies = (await customer.say("转人工"))["replies"]
    assert not [r for r in replies if (r.get("payload") or {}).get("type") == "booking_invite"]
    await customer.aclose()
    await online.aclose()


def test_the_official_account_menu_links_to_the_booking_page(isolated_stack, emulator):
    stack = isolated_stack()
    pushed = httpx.post(
        emulator.base_url + "/_sim/oa/event",
        json={
            "person": new_person(),
            "event": "CLICK",
            "event_key": "BOOK_APPOINTMENT",
            "url": stack.app_url + "/wechat/oa",
            "token": DEV_OA_TOKEN,
            "mode": "plain",
        },
        timeout=60,
    )
    assert pushed.status_code == 200, pushed.text
    content = pushed.json()["reply"]["Content"]
    assert "预约客户经理" in content and 'data-miniprogram-path="pages/booking/booking"' in content
