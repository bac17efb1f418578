"""Appointments: slots from the agent's schedule, the race for one slot (exactly one customer wins, enforced
by the database), reschedule and cancel by either side, joining at the slot rings that agent first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from tests.advisors.support import ALL_WEEK, agent, assign_advisor, eventually, held_ids, local_day
from tests.support import MiniappCustomer


async def _with_schedule(stack, **kwargs):
    agent_id, console = await agent(stack, **kwargs)
    response = await console.http.put("/agents/me/schedule", json={"periods": ALL_WEEK})
    assert response.status_code == 200, response.text
    return agent_id, console


def _engine(stack):
    return create_engine(stack.database_url.replace("+aiosqlite", ""))


async def test_two_customers_racing_for_one_slot_exactly_one_wins(isolated_stack, emulator):
    stack = isolated_stack(appointment_min_notice_minutes=0)
    advisor_id, advisor = await _with_schedule(stack, name="advisor")
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    customers = [await MiniappCustomer.login(stack.app_url, emulator) for _ in range(8)]
    for customer in customers:
        await assign_advisor(supervisor, customer, advisor_id)
    slots = (await customers[0].http.get("/miniapp/appointments/slots")).json()
    assert slots["advisor"]["agent_id"] == advisor_id and slots["slots"]
    target = slots["slots"][1]["starts_at"]
    body = {"starts_at": target, "mode": "video", "topic": "协商还款", "with": "advisor"}
    answers = await asyncio.gather(*(c.http.post("/miniapp/appointments", json=body) for c in customers))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 7, [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} <= {"slot_taken", "slot_unavailable"}
    engine = _engine(stack)
    with engine.connect() as conn:
        held = conn.execute(
            text("SELECT count(*) FROM appointment WHERE agent_id = :a AND holds_slot"), {"a": advisor_id}
        ).scalar()
    engine.dispose()
    assert held == 1
    # The slot is no longer offered to anyone.
    again = (await customers[1].http.get("/miniapp/appointments/slots")).json()
    assert target not in [s["starts_at"] for s in again["slots"]]
    for client in (*customers, advisor, supervisor):
        await client.aclose()


async def test_the_database_itself_refuses_a_second_booking_of_a_slot(isolated_stack, emulator):
    """Not the application's check: two rows for one agent and start, both holding the slot, can't exist."""
    stack = isolated_stack()
    advisor_id, advisor = await _with_schedule(stack, name="advisor")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    start = datetime(2030, 1, 7, 2, 0, tzinfo=UTC)
    insert = text(
        "INSERT INTO appointment (customer_id, agent_id, skill_group, mode, topic, starts_at, ends_at, state,"
        " holds_slot, booked_by, created_at, updated_at) VALUES (:c, :a, 'general', 'video', '', :s, :e, :st, :h,"
        " 'customer', :s, :s)"
    )
    engine = _engine(stack)
    row = {"c": customer.customer_id, "a": advisor_id, "s": start, "e": start + timedelta(minutes=30)}
    with engine.begin() as conn:
        conn.execute(insert, {**row, "st": "cancelled", "h": False})  # a cancelled one doesn't hold the slot
        conn.execute(insert, {**row, "st": "booked", "h": True})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {**row, "st": "booked", "h": True})
    engine.dispose()
    await customer.aclose()
    await advisor.aclose()


async def test_reschedule_and_cancel_by_either_side_and_the_freed_slot_is_bookable(isolated_stack, emulator):
    stack = isolated_stack(appointment_min_notice_minutes=0)
    advisor_id, advisor = await _with_schedule(stack, name="advisor")
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    one, two = [await MiniappCustomer.login(stack.app_url, emulator) for _ in range(2)]
    for customer in (one, two):
        await assign_advisor(supervisor, customer, advisor_id)
    slots = [s["starts_at"] for s in (await one.http.get("/miniapp/appointments/slots")).json()["slots"]]
    first = (await one.http.post("/miniapp/appointments", json={"starts_at": slots[2], "with": "advisor"})).json()
    second = (await two.http.post("/miniapp/appointments", json={"starts_at": slots[3], "with": "advisor"})).json()
    # The customer can't move onto a slot someone holds; they can move to a free one.
    taken = await one.http.post(f"/miniapp/appointments/{first['id']}/reschedule", json={"starts_at": slots[3]})
    assert taken.status_code == 409
    moved = await one.http.post(f"/miniapp/appointments/{first['id']}/reschedule", json={"starts_at": slots[4]})
    assert moved.status_code == 200, moved.text
    assert datetime.fromisoformat(moved.json()["starts_at"]) == datetime.fromisoformat(slots[4])
    # Someone else's appointment looks missing.
    assert (await two.http.post(f"/miniapp/appointments/{first['id']}/cancel", json={})).status_code == 404
    # The advisor cancels the second customer's appointment; its slot is free again and the first takes it.
    cancelled = await advisor.http.post(f"/agents/appointments/{second['id']}/cancel", json={"reason": "临时会议"})
    assert cancelled.status_code == 200 and cancelled.json()["cancelled_by"] == "agent"
    back = await one.http.post(f"/miniapp/appointments/{first['id']}/reschedule", json={"starts_at": slots[3]})
    assert back.status_code == 200, back.text
    listed = (await two.http.get("/miniapp/appointments")).json()
    assert [a["state"] for a in listed] == ["cancelled"]
    # The advisor reschedules and the customer sees it.
    agent_moved = await advisor.http.post(
        f"/agents/appointments/{first['id']}/reschedule", json={"starts_at": slots[5]}
    )
    assert agent_moved.status_code == 200
    mine = (await one.http.get("/miniapp/appointments")).json()
    assert datetime.fromisoformat(mine[0]["starts_at"]) == datetime.fromisoformat(slots[5])
    for client in (one, two, advisor, supervisor):
        await client.aclose()


async def test_booking_refuses_what_the_schedule_does_not_offer(isolated_stack, emulator):
    stack = isolated_stack()
    _, console = await agent(stack, name="plain")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    nowhere = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    no_advisor = await customer.http.post("/miniapp/appointments", json={"starts_at": nowhere.isoformat()})
    assert no_advisor.status_code == 400 and no_advisor.json()["error"]["code"] == "no_advisor"
    unscheduled = await customer.http.post(
        "/miniapp/appointments", json={"starts_at": nowhere.isoformat(), "with": "group", "group": "general"}
    )
    assert unscheduled.status_code == 409 and unscheduled.json()["error"]["code"] == "slot_unavailable"
    naive = await customer.http.post(
        "/miniapp/appointments", json={"starts_at": "2030-01-01T09:00:00", "with": "group", "group": "general"}
    )
    assert naive.status_code == 400
    bad_schedule = await console.http.put(
        "/agents/me/schedule", json={"periods": [{"weekday": 0, "start": "09:00", "end": "09:10"}]}
    )
    assert bad_schedule.status_code == 400
    overlapping = await console.http.put(
        "/agents/me/schedule",
        json={
            "periods": [
                {"weekday": 0, "start": "09:00", "end": "12:00"},
                {"weekday": 0, "start": "11:00", "end": "13:00"},
            ]
        },
    )
    assert overlapping.status_code == 400 and overlapping.json()["error"]["code"] == "periods_overlap"
    await customer.aclose()
    await console.aclose()


async def test_joining_at_the_slot_goes_to_that_agent_first_and_rings_them_first(isolated_stack, emulator):
    stack = isolated_stack(
        appointment_min_notice_minutes=0, appointment_join_early_minutes=60, routing_tick_s=0.2, appointment_sweep_s=0.2
    )
    _, colleague = await agent(stack, name="colleague")  # lower id: would win a tie in group routing
    advisor_id, advisor = await _with_schedule(stack, name="advisor")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    slots = (await customer.http.get("/miniapp/appointments/slots", params={"with": "group"})).json()["slots"]
    booked = await customer.http.post(
        "/miniapp/appointments", json={"starts_at": slots[0]["starts_at"], "with": "group", "topic": "面签"}
    )
    assert booked.status_code == 200 and booked.json()["agent_id"] == advisor_id
    joined = await customer.http.post(f"/miniapp/appointments/{booked.json()['id']}/join")
    assert joined.status_code == 200, joined.text
    conversation_id = joined.json()["conversation_id"]
    assert joined.json()["url"] == f"/h5/video/?conversation_id={conversation_id}"
    assert await eventually(lambda: _has(advisor, conversation_id))
    assert conversation_id not in await held_ids(colleague)
    card = (await advisor.http.get(f"/agents/conversations/{conversation_id}")).json()["handoff_card"]
    assert card["appointment"]["topic"] == "面签" and card["reason"] == "appointment"
    again = await customer.http.post(f"/miniapp/appointments/{booked.json()['id']}/join")
    assert again.json()["conversation_id"] == conversation_id  # a second tap is the same conversation
    # The appointment's own day in the bank's zone: near midnight the first slot is already tomorrow's.
    timezone = (await advisor.http.get("/agents/appointments/day")).json()["timezone"]
    its_day = local_day(booked.json()["starts_at"], timezone)
    day = (await advisor.http.get("/agents/appointments/day", params={"day": its_day})).json()
    entries = day["agents"][0]["entries"]
    assert entries and entries[0]["appointment"]["state"] == "joined" and "case_card" in entries[0]
    for client in (customer, advisor, colleague):
        await client.aclose()


async def _has(console, conversation_id):
    return conversation_id in await held_ids(console)


async def test_joining_while_with_another_agent_hands_the_conversation_to_the_appointments_agent(
    isolated_stack, emulator
):
    stack = isolated_stack(appointment_min_notice_minutes=0, appointment_join_early_minutes=60, routing_tick_s=0.2)
    advisor_id, advisor = await _with_schedule(stack, name="advisor", online=False)
    _, colleague = await agent(stack, name="colleague")
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await assign_advisor(supervisor, customer, advisor_id)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    assert await eventually(lambda: _has(colleague, conversation_id))  # the advisor is offline: the group
    slots = (await customer.http.get("/miniapp/appointments/slots")).json()["slots"]
    booked = await customer.http.post("/miniapp/appointments", json={"starts_at": slots[0]["starts_at"]})
    assert booked.status_code == 200, booked.text
    assert (await advisor.http.put("/agents/me/presence", json={"presence": "online"})).status_code == 200
    joined = await customer.http.post(f"/miniapp/appointments/{booked.json()['id']}/join")
    assert joined.status_code == 200 and joined.json()["conversation_id"] == conversation_id
    assert await eventually(lambda: _has(advisor, conversation_id))
    assert conversation_id not in await held_ids(colleague)
    texts = [m["text"] for m in (await customer.history())["messages"]]
    assert any("您预约的客户经理" in t for t in texts)
    for client in (customer, advisor, colleague, supervisor):
        await client.aclose()
