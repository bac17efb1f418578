"""Queries about named advisors."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.advisors.models import AdvisorAssignment
from api.agents.models import Agent


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
