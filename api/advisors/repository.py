"""Queries about named advisors."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.advisors.models import AdvisorAssignment
from api.agents.models import Agent
from api.appointments.models import Appointment, AppointmentState
from api.conversations.models import Conversation, ConversationState
from api.video.models import CallState, VideoCall


async def get_for_customer(session: AsyncSession, customer_id: int) -> AdvisorAssignment | None:
    statement = select(AdvisorAssignment).where(AdvisorAssignment.customer_id == customer_id)
    return (await session.exec(statement)).first()


async def get_advisor(session: AsyncSession, customer_id: int) -> Agent | None:
    """The customer's advisor, if they have one and the agent is still active."""
    statement = (
        select(Agent)
        .join(AdvisorAssignment, col(AdvisorAssignment.agent_id) == Agent.id)
        .where(AdvisorAssignment.customer_id == customer_id, col(Agent.active).is_(True))
    )
    return (await session.exec(statement)).first()


async def list_customers_of(session: AsyncSession, agent_id: int) -> list[AdvisorAssignment]:
    statement = (
        select(AdvisorAssignment)
        .where(AdvisorAssignment.agent_id == agent_id)
        .order_by(col(AdvisorAssignment.customer_id))
    )
    return list((await session.exec(statement)).all())


async def appointment_agent(session: AsyncSession, conversation_id: int) -> Agent | None:
    """The active agent of the (latest) appointment the customer joined in this conversation."""
    statement = (
        select(Agent)
        .join(Appointment, col(Appointment.agent_id) == Agent.id)
        .where(
            Appointment.conversation_id == conversation_id,
            Appointment.state == AppointmentState.JOINED,
            col(Agent.active).is_(True),
        )
        .order_by(col(Appointment.id).desc())
    )
    return (await session.exec(statement)).first()


async def calls_ringing_an_advisor(session: AsyncSession, *, limit: int) -> list[tuple[VideoCall, Conversation]]:
    """Unanswered calls ringing one named agent only, of conversations still queued or held."""
    statement = (
        select(VideoCall, Conversation)
        .join(Conversation, col(Conversation.id) == VideoCall.conversation_id)
        .where(
            VideoCall.state == CallState.RINGING,
            col(VideoCall.agent_id).is_(None),
            col(VideoCall.rung_agent_id).is_not(None),
            col(Conversation.state).in_((ConversationState.QUEUED, ConversationState.WITH_AGENT)),
        )
        .limit(limit)
    )
    return list((await session.exec(statement)).all())
