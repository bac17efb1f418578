"""The supervisor's view: live queues, agent load and presence, today's figures."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import col, func, select

from api.agents.models import Agent
from api.agents.reports import today_figures
from api.agents.router import queue_item
from api.agents.schemas import AgentLoad, AgentPublic, GroupQueue, SupervisorOverview
from api.agents.service import SKILL_GROUPS
from api.agents.signin import do_unlock
from api.bounds import RecordId
from api.conversations import service as conversations
from api.conversations.models import Conversation, ConversationState
from api.deps import LimiterDep, SessionDep, SettingsDep, Supervisor
from api.timeutil import utcnow

router = APIRouter(prefix="/supervisor", tags=["supervisor"])


@router.get("/overview", response_model=SupervisorOverview)
async def overview(_: Supervisor, session: SessionDep, settings: SettingsDep):
    now = utcnow()
    waiting = await conversations.list_queue(session)
    queues = []
    for group in SKILL_GROUPS:
        items = [queue_item(e, c) for e, c in waiting if e.skill_group == group]
        longest = max(((now - item.waiting_since).total_seconds() for item in items), default=0.0)
        queues.append(GroupQueue(skill_group=group, waiting=len(items), longest_wait_s=longest, items=items))
    loads = dict(
        (
            await session.exec(
                select(Conversation.agent_id, func.count())
                .where(Conversation.state == ConversationState.WITH_AGENT)
                .group_by(col(Conversation.agent_id))
            )
        ).all()
    )
    agents = (await session.exec(select(Agent).where(Agent.active == True).order_by(col(Agent.id)))).all()  # noqa: E712
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
