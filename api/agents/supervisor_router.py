"""The supervisor's view: live queues, agent load and presence, today's figures."""

from __future__ import annotations

from fastapi import APIRouter

from api.agents import repository
from api.agents.reports import today_figures
from api.agents.router import queue_item
from api.agents.schemas import AgentLoad, AgentPublic, GroupQueue, SupervisorOverview
from api.agents.service import SKILL_GROUPS
from api.agents.signin import do_unlock
from api.bounds import RecordId
from api.conversations import repository as conversations
from api.deps import LimiterDep, SessionDep, SettingsDep, Supervisor
from api.timeutil import utcnow

router = APIRouter(prefix="/supervisor", tags=["supervisor"])


@router.get("/overview", response_model=SupervisorOverview)
async def overview(_: Supervisor, session: SessionDep, settings: SettingsDep):
    now = utcnow()
    waiting = await conversations.waiting_escalations(session)
    queues = []
    for group in SKILL_GROUPS:
        items = [queue_item(e, c) for e, c in waiting if e.skill_group == group]
        longest = max(((now - item.waiting_since).total_seconds() for item in items), default=0.0)
        queues.append(GroupQueue(skill_group=group, waiting=len(items), longest_wait_s=longest, items=items))
    loads = await conversations.held_count_by_agent(session)
    agents = await repository.list_active(session)
    return SupervisorOverview(
        queues=queues,
        agents=[
            AgentLoad(
                id=a.id,
                display_name=a.display_name,
                role=a.role,
                skills=list(a.skills),
                presence=a.presence,
                capacity=a.capacity,
                load=int(loads.get(a.id, 0)),
                locked=a.locked_at is not None,
            )
            for a in agents
        ],
        today=await today_figures(session, tz=settings.timezone, now=now),
    )


@router.post("/agents/{agent_id}/unlock", response_model=AgentPublic)
async def unlock_agent(agent_id: RecordId, supervisor: Supervisor, session: SessionDep, limiter: LimiterDep):
    """Let an agent locked after repeated wrong passwords sign in again (audited)."""
    agent = await do_unlock(session, limiter, supervisor=supervisor, agent_id=agent_id)
    return AgentPublic.model_validate(agent, from_attributes=True)
