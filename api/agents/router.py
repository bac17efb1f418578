"""The agent API: sign in, presence, the queue, claim, and work on a held conversation."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from fastapi import APIRouter

from api import tickets
from api.agents import flows, signin
from api.agents.schemas import (
    AgentLogin,
    AgentPublic,
    AgentReply,
    AgentSession,
    CloseRequest,
    ConversationForAgent,
    HeldConversation,
    NoteCreate,
    PresenceUpdate,
    QueueItem,
    RevealedMessage,
    TransferRequest,
)
from api.audit.models import audit
from api.bounds import RecordId
from api.conversations import repository as conversations
from api.conversations.live_card import live_card
from api.conversations.models import Message, SenderKind
from api.conversations.schemas import ConversationDetail, MessagePublic
from api.db import saved_id
from api.delivery import repository as delivery_states
from api.delivery.models import MessageDelivery
from api.delivery.schemas import DeliveryPublic
from api.deps import (
    ClientAddress,
    CurrentAgent,
    DeliveryDep,
    LimiterDep,
    RedisDep,
    RoutingDep,
    SessionDep,
    SettingsDep,
)
from api.errors import NotPermitted, ResourceNotFound
from api.masking import mask_sensitive, mask_structure
from api.routing.flows import do_claim
from api.security import issue_token
from api.tickets import TicketPublic

router = APIRouter(prefix="/agents", tags=["agents"])
CANNED_PATH = Path(__file__).with_name("canned_replies.yml")


@router.post("/login", response_model=AgentSession)
async def login(
    body: AgentLogin, session: SessionDep, settings: SettingsDep, limiter: LimiterDep, client: ClientAddress
):
    """Sign in; repeated wrong passwords slow down (429 with Retry-After), then lock the account (403
    `account_locked`) until a supervisor unlocks it."""
    agent = await signin.do_sign_in(session, limiter, username=body.username, password=body.password, client=client)
    assert agent.id is not None
    token = issue_token(settings.signing_key(), kind="agent", subject=agent.id, ttl_s=settings.agent_session_ttl_s)
    return AgentSession(
        token=token,
        expires_in=settings.agent_session_ttl_s,
        agent=AgentPublic.model_validate(agent, from_attributes=True),
    )


@router.post("/tickets", response_model=TicketPublic)
async def mint_ticket(agent: CurrentAgent, redis: RedisDep, settings: SettingsDep):
    """A single-use ticket (60 s) to open the live inbox: `/agents/ws?ticket=` (no token in the URL)."""
    assert agent.id is not None
    ticket = await tickets.mint(redis, kind="agent", subject=agent.id, purpose="socket", ttl_s=settings.ticket_ttl_s)
    return TicketPublic(ticket=ticket, expires_in=settings.ticket_ttl_s)


@router.get("/me", response_model=AgentPublic)
async def me(agent: CurrentAgent):
    return AgentPublic.model_validate(agent, from_attributes=True)


@router.put("/me/presence", response_model=AgentPublic)
async def set_presence(
    body: PresenceUpdate, agent: CurrentAgent, session: SessionDep, routing: RoutingDep, delivery: DeliveryDep
):
    """online: take new conversations; away: keep yours, take no new ones; offline: yours go back to the queue."""
    agent = await flows.do_set_presence(session, routing, delivery, agent=agent, presence=body.presence)
    return AgentPublic.model_validate(agent, from_attributes=True)


@router.get("/queue", response_model=list[QueueItem])
async def queue(agent: CurrentAgent, session: SessionDep, all_groups: bool = False):
    """Waiting conversations in the agent's skill groups (every group for supervisors who ask)."""
    groups = None if all_groups and agent.role in ("supervisor", "admin") else agent.skills
    return [queue_item(e, c) for e, c in await conversations.waiting_escalations(session, skill_groups=groups)]


def queue_item(escalation, conversation) -> QueueItem:
    return QueueItem(
        escalation_id=escalation.id,
        conversation_id=conversation.id,
        skill_group=escalation.skill_group,
        priority=escalation.priority,
        mode=escalation.mode,
        reason=escalation.reason,
        intent=escalation.intent,
        waiting_since=escalation.created_at,
        summary=mask_sensitive(escalation.handoff_card.get("summary", "")),
    )


@router.get("/me/conversations", response_model=list[HeldConversation])
async def held(agent: CurrentAgent, session: SessionDep):
    """The conversations this agent holds now."""
    assert agent.id is not None
    result = []
    for conversation in await conversations.held_by(session, agent.id, newest_first=True):
        assert conversation.id is not None
        escalation = await conversations.latest_escalation(session, conversation.id)
        result.append(
            HeldConversation(
                conversation_id=conversation.id,
                intent=conversation.intent,
                current_channel=conversation.current_channel,
                updated_at=conversation.updated_at,
                answered=bool(escalation and escalation.first_response_at),
            )
        )
    return result


@router.post("/conversations/{conversation_id}/claim", response_model=ConversationDetail)
async def claim(
    conversation_id: RecordId, agent: CurrentAgent, session: SessionDep, routing: RoutingDep, delivery: DeliveryDep
):
    conversation = await do_claim(session, routing, delivery, agent=agent, conversation_id=conversation_id)
    return ConversationDetail.of(conversation)


@router.get("/conversations/{conversation_id}", response_model=ConversationForAgent)
async def read_conversation(conversation_id: RecordId, agent: CurrentAgent, session: SessionDep, settings: SettingsDep):
    """The handoff card and the whole transcript across channels, ID/card/phone numbers masked."""
    conversation = await flows.get_for_agent(session, agent=agent, conversation_id=conversation_id)
    assert conversation.id is not None
    escalation = await conversations.latest_escalation(session, conversation.id)
    messages = await conversations.list_messages(session, conversation_id=conversation.id, include_internal=True)
    detail = ConversationDetail.of(conversation)
    detail.slots = mask_structure(detail.slots)
    deliveries = await delivery_states.list_for_messages(
        session, [saved_id(m) for m in messages if m.sender_kind == SenderKind.AGENT]
    )
    card = await live_card(session, conversation, escalation, days=settings.case_memory_days) if escalation else None
    return ConversationForAgent(
        conversation=detail,
        handoff_card=mask_structure(card) if card else None,
        messages=[_masked(m, deliveries.get(saved_id(m))) for m in messages],
    )


def _masked(message: Message, delivery: MessageDelivery | None = None) -> MessagePublic:
    public = MessagePublic.of(message)
    public.text = mask_sensitive(public.text)
    if delivery is not None:
        public.delivery = DeliveryPublic.of(delivery)
    return public


@router.post("/conversations/{conversation_id}/messages/{message_id}/reveal", response_model=RevealedMessage)
async def reveal(conversation_id: RecordId, message_id: RecordId, agent: CurrentAgent, session: SessionDep):
    """The unmasked text of one message: supervisors, admins, or the agent holding the conversation; audited."""
    conversation = await flows.get_for_agent(session, agent=agent, conversation_id=conversation_id)
    if agent.role not in ("supervisor", "admin") and conversation.agent_id != agent.id:
        raise NotPermitted("only the agent holding the conversation or a supervisor may reveal numbers")
    message = await session.get(Message, message_id)
    if message is None or message.conversation_id != conversation.id:
        raise ResourceNotFound("message not found")
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="reveal",
        subject=f"message:{message.id}",
        conversation_id=conversation.id,
    )
    return RevealedMessage(message_id=message.id, text=message.text)


@router.post("/conversations/{conversation_id}/messages", response_model=MessagePublic)
async def reply(
    conversation_id: RecordId, body: AgentReply, agent: CurrentAgent, session: SessionDep, delivery: DeliveryDep
):
    message = await flows.do_send_agent_reply(
        session, delivery, agent=agent, conversation_id=conversation_id, text=body.text
    )
    # Where it got to while we delivered it (the console then follows it live: `delivery` events).
    assert message.id is not None
    return _masked(message, await delivery_states.get_by_message(session, message.id))


@router.post("/conversations/{conversation_id}/typing", status_code=204)
async def typing(conversation_id: RecordId, agent: CurrentAgent, session: SessionDep, delivery: DeliveryDep) -> None:
    """The agent is writing a reply: show "typing…" to the customer."""
    await flows.do_show_typing(session, delivery, agent=agent, conversation_id=conversation_id)


@router.post("/conversations/{conversation_id}/notes", response_model=MessagePublic)
async def add_note(conversation_id: RecordId, body: NoteCreate, agent: CurrentAgent, session: SessionDep):
    """An internal note the customer never sees."""
    return MessagePublic.of(
        await flows.do_add_note(session, agent=agent, conversation_id=conversation_id, text=body.text)
    )


@router.post("/conversations/{conversation_id}/transfer", response_model=ConversationDetail)
async def transfer(
    conversation_id: RecordId,
    body: TransferRequest,
    agent: CurrentAgent,
    session: SessionDep,
    routing: RoutingDep,
    delivery: DeliveryDep,
):
    conversation = await flows.do_transfer(
        session,
        routing,
        delivery,
        agent=agent,
        conversation_id=conversation_id,
        to_group=body.to_group,
        to_agent_id=body.to_agent_id,
    )
    return ConversationDetail.of(conversation)


@router.post("/conversations/{conversation_id}/close", response_model=ConversationDetail)
async def close(
    conversation_id: RecordId,
    body: CloseRequest,
    agent: CurrentAgent,
    session: SessionDep,
    routing: RoutingDep,
    delivery: DeliveryDep,
):
    conversation = await flows.do_close(
        session, routing, delivery, agent=agent, conversation_id=conversation_id, disposition=body.disposition
    )
    return ConversationDetail.of(conversation)


@router.get("/canned-replies", response_model=list[str])
async def canned_replies(agent: CurrentAgent, intent: str | None = None):
    """Ready-made replies for the conversation's scenario, then the general ones."""
    catalog = _canned_catalog()
    return [*catalog.get(intent or "", []), *catalog.get("general", [])]


@lru_cache(maxsize=1)
def _canned_catalog() -> dict[str, list[str]]:
    return yaml.safe_load(CANNED_PATH.read_text(encoding="utf-8"))
