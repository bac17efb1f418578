"""The console's day: each appointment with the case card an advisor reads before the call."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.appointments import repository
from api.appointments.models import Appointment
from api.appointments.schemas import AgentDay, AppointmentPublic, DayEntry
from api.conversations import repository as conversations
from api.db import saved_id
from api.documents import repository as document_queries
from api.masking import mask_sensitive, mask_structure


async def case_card(session: AsyncSession, appointment: Appointment) -> dict:
    """Who the customer is to us and what they came for last time (masked: the day view is not a reveal)."""
    latest = await conversations.latest_conversation(session, appointment.customer_id)
    escalation = None
    if latest is not None:
        assert latest.id is not None
        escalation = await conversations.latest_escalation(session, latest.id)
    card = mask_structure(escalation.handoff_card) if escalation else {}
    documents = await document_queries.count_for_customer(session, appointment.customer_id)
    history = await repository.count_by_state(session, appointment.customer_id)
    return {
        "customer_id": appointment.customer_id,
        "topic": mask_sensitive(appointment.topic),
        "last_conversation_id": latest.id if latest else None,
        "last_intent": card.get("intent"),
        "last_scenario": card.get("scenario"),
        "last_summary": card.get("summary", ""),
        "identity_status": card.get("identity_status"),
        "documents": int(documents),
        "appointments": history,
        "no_shows": int(history.get("no_show", 0)),
    }


async def agent_days(session: AsyncSession, agents: list[Agent], *, start, end) -> list[AgentDay]:
    by_agent: dict[int, list[DayEntry]] = {saved_id(agent): [] for agent in agents}
    names = {saved_id(agent): agent.display_name for agent in agents}
    for appointment in await repository.list_day(session, start=start, end=end, agent_ids=list(by_agent)):
        by_agent[appointment.agent_id].append(
            DayEntry(
                appointment=AppointmentPublic.of(appointment, names[appointment.agent_id]),
                case_card=await case_card(session, appointment),
            )
        )
    return [
        AgentDay(
            agent_id=agent.id,
            display_name=agent.display_name,
            presence=agent.presence,
            entries=by_agent[saved_id(agent)],
        )
        for agent in agents
    ]
