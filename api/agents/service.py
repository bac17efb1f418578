"""Agent accounts: creation and sign-in."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents import repository
from api.agents.models import Agent, AgentRole
from api.errors import Conflict
from api.security import hash_password, hash_password_async, verify_password_async

SKILL_GROUPS = ("cards", "loans", "accounts", "wealth", "general")


async def create(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    display_name: str | None = None,
    role: str = AgentRole.AGENT,
    skills: list[str] | None = None,
    capacity: int = 3,
    video_capable: bool = True,
) -> Agent:
    """A new agent with an argon2-hashed password."""
    if await repository.get_by_username(session, username) is not None:
        raise Conflict(f"agent {username!r} already exists", code="agent_exists")
    unknown = set(skills or ()) - set(SKILL_GROUPS)
    if unknown:
        raise ValueError(f"unknown skill groups: {sorted(unknown)}")
    agent = Agent(
        username=username,
        display_name=display_name or username,
        password_hash=await hash_password_async(password),
        role=AgentRole(role),
        skills=list(skills or ["general"]),
        capacity=capacity,
        video_capable=video_capable,
    )
    session.add(agent)
    await session.flush()
    return agent


async def check_password(agent: Agent | None, password: str) -> bool:
    """True for the active agent's own password; the same work (and time) for an unknown or disabled one."""
    if agent is None or not agent.active:
        await verify_password_async(_DUMMY_HASH, password)
        return False
    return await verify_password_async(agent.password_hash, password)


_DUMMY_HASH = hash_password("not-a-real-password")
