"""The appointment sweep: a reminder before the slot as a WeChat subscribe message (one per customer even with
two workers sweeping, 'refused' without the customer's grant), no-shows and completed appointments after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import create_engine, text

from api.settings import DEV_MINIAPP_APP_ID
from tests.advisors.support import ALL_WEEK, agent, eventually
from tests.support import MiniappCustomer, new_person

TEMPLATE = "yt-appointment-reminder"
SWEEP = dict(
    appointment_min_notice_minutes=0, appointment_reminder_minutes=24 * 60, appointment_sweep_s=0.2, routing_tick_s=0.5
)


async def test_each_customer_is_reminded_once_even_with_two_workers(isolated_stack, emulator):
    stack = isolated_stack(**SWEEP)
    isolated_stack.add_worker(stack, **SWEEP)
    _, console = await agent(stack, name="advisor")
    assert (await console.http.put("/agents/me/schedule", json={"periods": ALL_WEEK})).status_code == 200
    granted_person, refused_person = new_person(), new_person()
    granted = await MiniappCustomer.login(stack.app_url, emulator, granted_person)
    refused = await MiniappCustomer.login(stack.app_urls[1], emulator, refused_person)
    openid = emulator.identity(granted_person)["openid"]
    for _ in range(3):  # grants to spare: a second send would go through, so "once" is the sweep's doing
        response = httpx.post(
            emulator.base_url + "/_sim/subscribe_grants",
            json={"appid": DEV_MINIAPP_APP_ID, "openid": openid, "template_id": TEMPLATE},
        )
        assert response.status_code == 200
    slots = (await granted.http.get("/miniapp/appointments/slots", params={"with": "group"})).json()["slots"]
    for customer, slot in ((granted, slots[0]), (refused, slots[1])):
        booked = await customer.http.post(
            "/miniapp/appointments", json={"starts_at": slot["starts_at"], "with": "group", "topic": "理财咨询"}
        )
        assert booked.status_code == 200, booked.text

    async def reminded(customer):
        state = (await customer.http.get("/miniapp/appointments")).json()[0]["reminder_state"]
        return state if state not in (None, "sending") else None

    assert await eventually(lambda: reminded(granted)) == "sent"
    assert await eventually(lambda: reminded(refused)) == "refused"
    await _sleep(1.0)  # more sweeps by both workers
    sent = httpx.get(emulator.base_url + "/_sim/sent", params={"openid": openid, "api": "subscribe"}).json()["items"]
    assert len(sent) == 1
    body = sent[0]["body"]
    assert body["template_id"] == TEMPLATE and body["page"].startswith("pages/booking/booking?appointment_id=")
    assert body["data"]["thing1"]["value"] == "理财咨询"
    for client in (granted, refused, console):
        await client.aclose()


async def test_a_reminder_left_sending_by_a_dead_worker_is_sent_after_its_lease_and_a_live_claim_is_left_alone(
    isolated_stack, emulator
):
    stack = isolated_stack(**SWEEP, appointment_reminder_lease_s=60)
    agent_id, console = await agent(stack, name="advisor")
    person = new_person()
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)
    openid = emulator.identity(person)["openid"]
    for _ in range(3):  # grants to spare: more than one send would go through
        grant = {"appid": DEV_MINIAPP_APP_ID, "openid": openid, "template_id": TEMPLATE}
        assert httpx.post(emulator.base_url + "/_sim/subscribe_grants", json=grant).status_code == 200
    now = datetime.now(UTC)
    engine = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with engine.begin() as conn:
        for topic, start, claimed in (
            ("死掉的提醒", now + timedelta(hours=1), now - timedelta(minutes=5)),  # its worker died 5 min ago
            ("正在发送", now + timedelta(hours=2), now),  # a live worker claimed it just now
        ):
            _insert(
                conn, customer.customer_id, agent_id, start, topic=topic, reminder_state="sending", reminded_at=claimed
            )

    async def reminder_states():
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT reminder_state FROM appointment ORDER BY id")).all()
        found = [r[0] for r in rows]
        return found if found[0] != "sending" else None

    assert await eventually(reminder_states) == ["sent", "sending"]
    await _sleep(1.0)  # more sweeps: the live claim is still not taken
    assert await reminder_states() == ["sent", "sending"]
    sent = httpx.get(emulator.base_url + "/_sim/sent", params={"openid": openid, "api": "subscribe"}).json()["items"]
    assert [item["body"]["data"]["thing1"]["value"] for item in sent] == ["死掉的提醒"]
    engine.dispose()
    await customer.aclose()
    await console.aclose()


async def test_a_missed_appointment_is_recorded_as_a_no_show(isolated_stack, emulator):
    stack = isolated_stack(**SWEEP, appointment_no_show_minutes=5)
    agent_id, console = await agent(stack, name="advisor")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    now = datetime.now(UTC)
    engine = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with engine.begin() as conn:
        for start, state in (
            (now - timedelta(hours=1), "booked"),
            (now - timedelta(minutes=2), "booked"),
            (now - timedelta(hours=2), "joined"),
        ):
            _insert(conn, customer.customer_id, agent_id, start, state=state)

    async def states():
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT state FROM appointment ORDER BY id")).all()
        found = [r[0] for r in rows]
        return found if found[0] == "no_show" and found[2] == "completed" else None

    assert await eventually(states) == ["no_show", "booked", "completed"]  # the second is still within its grace
    with engine.connect() as conn:
        audited = conn.execute(text("SELECT count(*) FROM audit_event WHERE action = 'appointment_no_show'")).scalar()
    engine.dispose()
    assert audited == 1
    await customer.aclose()
    await console.aclose()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _insert(conn, customer_id, agent_id, starts_at, *, state="booked", topic="", reminder_state=None, reminded_at=None):
    """An appointment row as the sweep finds it (30 minutes long, video, with the group)."""
    conn.execute(
        text(
            "INSERT INTO appointment (customer_id, agent_id, skill_group, mode, topic, starts_at, ends_at, state,"
            " holds_slot, booked_by, created_at, updated_at, reminder_state, reminded_at) VALUES (:c, :a, 'general',"
            " 'video', :t, :s, :e, :st, true, 'customer', :s, :s, :rs, :ra)"
        ),
        {
            "c": customer_id,
            "a": agent_id,
            "t": topic,
            "s": starts_at,
            "e": starts_at + timedelta(minutes=30),
            "st": state,
            "rs": reminder_state,
            "ra": reminded_at,
        },
    )
