"""Two API workers on one database and Redis, no sticky routing: a call's media is in the media worker it
was placed on at the first offer; the other party's offer, sent to the other API worker, reaches it too."""

from __future__ import annotations

import httpx
from sqlalchemy import create_engine, text

from tests.video.clients import MediaParty, looks_like
from tests.video.support import (
    escalated_customer,
    request_call,
    video_agent,
    wait_for_call,
    wait_for_recordings,
    wait_until,
)

SMALL = dict(width=320, height=240, fps=15)


async def test_the_agent_on_another_worker_reaches_the_call_and_hangs_it_up_there(video_stack, emulator):
    stack = video_stack()
    second_url = video_stack.add_worker(stack)
    customer, conversation_id = await escalated_customer(stack, emulator)  # worker A
    agent = await video_agent(stack, presence="away", app_url=second_url)  # worker B
    call = await request_call(customer, conversation_id)
    customer_media, agent_media = MediaParty("customer", **SMALL), MediaParty("agent", **SMALL)
    assert (await customer_media.negotiate(customer.http, call["id"])).status_code == 200
    await wait_for_call(agent.http, call["id"], "ringing")
    assert (await agent.http.post(f"/video/calls/{call['id']}/accept")).status_code == 200
    answered = await agent_media.negotiate(agent.http, call["id"])  # through B to the media worker
    assert answered.status_code == 200, answered.text
    await wait_for_call(agent.http, call["id"], "connected")
    await wait_until(
        lambda: len(agent_media.received) > 10 and len(customer_media.received) > 10, 15, "frames both ways"
    )
    assert looks_like(agent_media.received[-1][0], "customer") and looks_like(customer_media.received[-1][0], "agent")
    events = (await agent.http.get(f"/video/calls/{call['id']}")).json()["events"]
    offers = {e["kind"]: e["detail"] for e in events if e["kind"].startswith("offer_")}
    # Both parties' media in the one media worker, though their offers came through different API workers.
    assert offers["offer_customer"]["worker"] == offers["offer_agent"]["worker"] == stack.media[0].worker_id
    assert offers["offer_customer"]["via"] != offers["offer_agent"]["via"]
    assert stack.media[0].worker_id not in (offers["offer_customer"]["via"], offers["offer_agent"]["via"])

    hung_up = await agent.http.post(f"/video/calls/{call['id']}/hangup")  # on B
    assert hung_up.json()["state"] == "ended" and hung_up.json()["end_reason"] == "agent_hangup"
    recordings = await wait_for_recordings(agent, call["id"])
    assert all(r["status"] == "complete" for r in recordings)
    await wait_until(
        lambda: customer_media.pc.connectionState in ("closed", "failed"),
        15,
        "the media worker to close the customer's media",
    )
    for party in (customer_media, agent_media):
        await party.close()
    await customer.aclose()
    await agent.aclose()


async def test_an_offer_for_a_call_whose_worker_is_gone_is_a_clear_503(video_stack, emulator):
    stack = video_stack()
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    # Pretend another worker took the call's media and then vanished.
    engine = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with engine.begin() as conn:
        conn.execute(text("UPDATE video_call SET media_worker = 'gone:1:dead' WHERE id = :id"), {"id": call["id"]})
    engine.dispose()
    media = MediaParty("customer", **SMALL)
    refused = await media.negotiate(customer.http, call["id"])
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "media_worker_unavailable"
    await media.close()
    assert httpx.get(stack.app_url + "/video/notice").status_code == 200
    await customer.aclose()
