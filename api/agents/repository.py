"""Queries about agents. No commits here."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent


async def get_by_username(session: AsyncSession, username: str) -> Agent | None:
    return (await session.exec(select(Agent).where(Agent.username == username))).first()


async def list_active(session: AsyncSession) -> list[Agent]:
    statement = select(Agent).where(Agent.active == True).order_by(col(Agent.id))  # noqa: E712
    return list((await session.exec(statement)).all())


async def list_online(session: AsyncSession) -> list[Agent]:
    """Agents marked online (active or not: a disabled agent still online is marked offline by the routing tick)."""
    return list((await session.exec(select(Agent).where(Agent.presence == "online"))).all())


async def count_online_in(session: AsyncSession, skill_group: str) -> int:
    """How many active agents are online with this skill (skills are a JSON list, so counted here)."""
    statement = select(Agent).where(Agent.presence == "online", Agent.active == True)  # noqa: E712
    agents = (await session.exec(statement)).all()
    return sum(1 for agent in agents if skill_group in agent.skills)


async def count_online(session: AsyncSession) -> int:
    """Active agents whose presence is online (the metrics' gauge)."""
    statement = select(func.count()).select_from(Agent).where(col(Agent.active).is_(True), Agent.presence == "online")
    return (await session.exec(statement)).one()
