"""Agent sign-in under brute-force limits, and the supervisor's unlock.

Every attempt counts against the client address; wrong passwords count against the username: past the
backoff limit each further try waits (429, Retry-After), past the lockout limit the account is locked in
SQL until a supervisor unlocks it. Failures, lockouts and unlocks are audited. The argon2 check runs off
the event loop, after the read's SQL connection went back to the pool.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents import repository, service
from api.agents.models import Agent
from api.audit.models import audit
from api.errors import NotAuthenticated, NotPermitted, ResourceNotFound
from api.ratelimit import RateLimiter
from api.timeutil import utcnow

LOCKED_MESSAGE = "账号因多次密码错误已锁定，请联系主管解锁（account locked after repeated wrong passwords）"


async def do_sign_in(
    session: AsyncSession, limiter: RateLimiter, *, username: str, password: str, client: str
) -> Agent:
    """The agent for these credentials, committed with its audit row; NotAuthenticated, NotPermitted (locked) or
    TooManyRequests otherwise."""
    await limiter.hit("agent_login_client", client)
    await limiter.check("agent_login_failures", username)
    agent = await repository.get_by_username(session, username)
    if agent is not None and agent.locked_at is not None:
        raise NotPermitted(LOCKED_MESSAGE, code="account_locked")
    await session.commit()  # the connection goes back to the pool while the hash is checked
    if await service.check_password(agent, password):
        assert agent is not None  # check_password is False without one
        await limiter.clear("agent_login_failures", username)
        await limiter.clear("agent_login_lockout", username)
        audit(session, actor_kind="agent", actor_id=agent.id, action="agent_login", subject=f"agent:{agent.id}")
        await session.commit()
        return agent
    await _failed(session, limiter, agent, username=username, client=client)
    raise NotAuthenticated("wrong username or password", code="bad_credentials")


async def _failed(session: AsyncSession, limiter: RateLimiter, agent: Agent | None, *, username: str, client: str):
    await limiter.count("agent_login_failures", username)
    await limiter.count("agent_login_lockout", username)
    within = await limiter.has_room("agent_login_lockout", username)  # the Nth failure of "N/period" locks
    subject = f"agent:{agent.id}" if agent else f"username:{username[:64]}"
    audit(session, actor_kind="client", actor_id=None, action="agent_login_failed", subject=subject, client=client)
    if agent is not None and not within and agent.locked_at is None:
        agent.locked_at = utcnow()
        session.add(agent)
        audit(session, actor_kind="system", actor_id=None, action="agent_locked", subject=subject, client=client)
    await session.commit()


async def do_unlock(session: AsyncSession, limiter: RateLimiter, *, supervisor: Agent, agent_id: int) -> Agent:
    """A supervisor lets a locked agent sign in again (and forgets their wrong passwords); audited."""
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise ResourceNotFound("agent not found")
    was_locked = agent.locked_at is not None
    agent.locked_at = None
    session.add(agent)
    audit(
        session,
        actor_kind="agent",
        actor_id=supervisor.id,
        action="agent_unlock",
        subject=f"agent:{agent.id}",
        was_locked=was_locked,
    )
    await session.commit()
    await limiter.clear("agent_login_failures", agent.username)
    await limiter.clear("agent_login_lockout", agent.username)
    return agent
