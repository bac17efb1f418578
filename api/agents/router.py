"""The agent API, first cut: sign in, see the queue, claim, read the transcript, reply."""

from __future__ import annotations

from fastapi import APIRouter

from api.agents import flows, service
from api.agents.schemas import (
    AgentLogin, AgentPublic, AgentReply, AgentSession, ConversationForAgent, QueueItem,
)
from api.audit.models import audit
from api.conversations import service as conversations
from api.conversations.schemas import ConversationDetail, MessagePublic
from api.deps import CurrentAgent, DeliveryDep, RedisDep, SessionDep, SettingsDep
from api.errors import NotAuthenticated
from api.security import issue_token

router = APIRouter(prefix="/agents", tags=["agents"])


@router.post("/login", response_model=AgentSession)
async def login(body: AgentLogin, session: SessionDep, settings: SettingsDep):
    agent = await service.authenticate(session, username=body.username, password=body.password)
    if agent is None:
        raise NotAuthenticated("wrong username or password", code="bad_credentials")
    audit(session, actor_kind="agent", actor_id=agent.id, action="agent_login", subject=f"agent:{agent.id}")
    token = issue_token(settings.signing_key(), kind="agent", subject=agent.id, ttl_s=settings.agent_session_ttl_s)
    return AgentSession(token=token, expires_in=settings.agent_session_ttl_s, agent=AgentPublic.model_validate(agent, from_attributes=True))


@router.get("/me", response_model=AgentPublic)
async def me(agent: CurrentAgent):
    return AgentPublic.model_validate(agent, from_attributes=True)


@router.get("/queue", response_model=list[QueueItem])
async def queue(agent: CurrentAgent, session: SessionDep, all_groups: bool = False):
    """Waiting conversations in the agent's skill groups (all groups for supervisors who ask)."""
    groups = None if all_groups and agent.role in ("supervisor", "admin") else agent.skills
    return [
        QueueItem(
            escalation_id=escalation.id, conversation_id=conversation.id, skill_group=escalation.skill_group,
            priority=escalation.priority, mode=escalation.mode, reason=escalation.reason, intent=escalation.intent,
            waiting_since=escalation.created_at, summary=escalation.handoff_card.get("summary", ""),
        )
        for escalation, conversation in await conversations.list_queue(session, skill_groups=groups)
    ]


@router.post("/conversations/{conversation_id}/claim", response_model=ConversationDetail)
async def claim(conversation_id: int, agent: CurrentAgent, session: SessionDep, redis: RedisDep, delivery: DeliveryDep):
    conversation = await flows.do_claim(session, redis, delivery, agent=agent, conversation_id=conversation_id)
    return ConversationDetail.of(conversation)


@router.get("/conversations/{conversation_id}", response_model=ConversationForAgent)
async def read_conversation(conversation_id: int, agent: CurrentAgent, session: SessionDep):
    """The handoff card and the full transcript across channels."""
    conversation = await flows.get_for_agent(session, agent=agent, conversation_id=conversation_id)
    escalation = await conversations.get_latest_escalation(session, conversation.id)
    messages = await conversations.list_messages(session, conversation_id=conversation.id)
    return ConversationForAgent(
        conversation=ConversationDetail.of(conversation),
        handoff_card=escalation.handoff_card if escalation else None,
        messages=[MessagePublic.of(m) for m in messages],
    )


@router.post("/conversations/{conversation_id}/messages", response_model=MessagePublic)
async def reply(conversation_id: int, body: AgentReply, agent: CurrentAgent, session: SessionDep, delivery: DeliveryDep):
    message = await flows.do_send_agent_reply(session, delivery, agent=agent, conversation_id=conversation_id, text=body.text)
    return MessagePublic.of(message)
