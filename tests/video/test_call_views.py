"""Call views follow the conversation's read rule, and show numbers masked like the rest of the console."""

from __future__ import annotations

import re

from tests.video.support import escalated_customer, request_call, video_agent

PHONE = "13812345678"


async def test_another_agent_of_the_group_cannot_read_a_call_in_a_conversation_someone_else_holds(
    video_stack, emulator
):
    stack = video_stack()
    holder = await video_agent(stack, skills=("accounts", "general"))  # online: the escalation goes to them
    customer, conversation_id = await escalated_customer(stack, emulator, f"修改预留手机号，新号码{PHONE}")
    other = await video_agent(stack, skills=("accounts", "general"), presence="away")
    supervisor = await video_agent(stack, presence="away", role="supervisor")
    call = await request_call(customer, conversation_id)

    conversation = await other.http.get(f"/agents/conversations/{conversation_id}")
    assert conversation.status_code == 403  # the rule the call views must follow
    view = await other.http.get(f"/video/calls/{call['id']}")
    assert view.status_code == 403, view.text
    listed = await other.http.get("/video/calls", params={"conversation_id": conversation_id})
    assert listed.status_code == 403

    for reader in (holder, supervisor):
        view = await reader.http.get(f"/video/calls/{call['id']}")
        assert view.status_code == 200, view.text
        card = view.json()["handoff_card"]
        assert card is not None and "138****5678" in view.text, card
        assert PHONE not in view.text  # clear text only through the audited reveal
        assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", view.text)
    own = await customer.http.get(f"/video/calls/{call['id']}")
    assert own.status_code == 200 and own.json()["id"] == call["id"]
